//! `SequentialLR`: one scheduler after another (a warm-up, then a decay).

use super::{field, field_f64_list, field_i64, floats, LrScheduler};
use crate::Optimizer;
use flambeau_core::value::{Dict, DictKind, Value};
use flambeau_core::{Error, Result};

/// Runs `schedulers[i]` from `milestones[i-1]` on; each later scheduler restarts from its
/// closed form at its milestone, as PyTorch does.
pub struct SequentialLr {
    schedulers: Vec<Box<dyn LrScheduler>>,
    milestones: Vec<i64>,
    last_epoch: i64,
    last_lr: Vec<f64>,
}

impl std::fmt::Debug for SequentialLr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SequentialLr")
            .field("milestones", &self.milestones)
            .field("last_epoch", &self.last_epoch)
            .finish()
    }
}

/// Python's `bisect_right`: how many milestones are ≤ `x`.
fn bisect_right(milestones: &[i64], x: i64) -> usize {
    milestones.iter().filter(|&&m| m <= x).count()
}

impl SequentialLr {
    /// Chains `schedulers` (built on `opt` beforehand, as in PyTorch) at `milestones`.
    pub fn new(
        opt: &mut dyn Optimizer,
        mut schedulers: Vec<Box<dyn LrScheduler>>,
        milestones: Vec<i64>,
    ) -> Result<Self> {
        if schedulers.is_empty() {
            return Err(Error::invalid_argument(
                "schedulers",
                "SequentialLR expects at least one scheduler, but got no scheduler.",
            ));
        }
        if milestones.len() != schedulers.len() - 1 {
            return Err(Error::invalid_argument(
                "milestones",
                format!(
                    "Sequential Schedulers expects number of schedulers provided to be one more than the number of milestone points, but got number of schedulers {} and the number of milestones to be equal to {}",
                    schedulers.len(),
                    milestones.len()
                ),
            ));
        }
        for g in opt.param_groups_mut() {
            let initial = g.get_f64("initial_lr")?;
            g.set_lr(initial);
        }
        for s in &mut schedulers {
            s.undo_epoch();
        }
        let idx = bisect_right(&milestones, 0);
        schedulers[idx].initial_step(opt)?;
        let last_lr = schedulers[idx].last_lr();
        Ok(Self {
            schedulers,
            milestones,
            last_epoch: 0,
            last_lr,
        })
    }
}

impl LrScheduler for SequentialLr {
    fn step(&mut self, opt: &mut dyn Optimizer) -> Result<()> {
        self.last_epoch += 1;
        let idx = bisect_right(&self.milestones, self.last_epoch);
        let s = &mut self.schedulers[idx];
        if idx > 0 && self.milestones[idx - 1] == self.last_epoch {
            s.update_lr_at(opt, 0)?;
        } else {
            s.step(opt)?;
        }
        self.last_lr = s.last_lr();
        Ok(())
    }

    fn last_lr(&self) -> Vec<f64> {
        self.last_lr.clone()
    }

    fn last_epoch(&self) -> i64 {
        self.last_epoch
    }

    fn state_dict(&self) -> Value {
        let mut d = Dict::new(DictKind::Plain);
        d.insert(
            "_milestones",
            Value::List(self.milestones.iter().map(|m| Value::Int(*m)).collect()),
        );
        d.insert("last_epoch", self.last_epoch);
        d.insert("_last_lr", floats(&self.last_lr));
        d.insert(
            "_schedulers",
            Value::List(self.schedulers.iter().map(|s| s.state_dict()).collect()),
        );
        Value::Dict(d)
    }

    fn load_state_dict(&mut self, state: &Value) -> Result<()> {
        let d = state.as_dict().ok_or_else(|| {
            Error::invalid_state("scheduler", "a scheduler state_dict must be a dict")
        })?;
        let children = field(d, "_schedulers")?.as_seq().ok_or_else(|| {
            Error::invalid_state("scheduler", "SequentialLR `_schedulers` must be a list")
        })?;
        if children.len() != self.schedulers.len() {
            return Err(Error::invalid_state(
                "scheduler",
                format!(
                    "SequentialLR state has {} schedulers, this one {}",
                    children.len(),
                    self.schedulers.len()
                ),
            ));
        }
        for (s, c) in self.schedulers.iter_mut().zip(children) {
            s.load_state_dict(c)?;
        }
        self.milestones = field(d, "_milestones")?
            .as_seq()
            .and_then(|m| m.iter().map(Value::as_i64).collect())
            .ok_or_else(|| {
                Error::invalid_state("scheduler", "SequentialLR `_milestones` must be ints")
            })?;
        self.last_epoch = field_i64(d, "last_epoch")?;
        self.last_lr = field_f64_list(d, "_last_lr")?;
        Ok(())
    }

    fn initial_step(&mut self, opt: &mut dyn Optimizer) -> Result<()> {
        self.step(opt)
    }

    fn update_lr_at(&mut self, opt: &mut dyn Optimizer, epoch: i64) -> Result<()> {
        let idx = bisect_right(&self.milestones, epoch);
        self.schedulers[idx].update_lr_at(opt, epoch)
    }

    fn undo_epoch(&mut self) {
        for s in &mut self.schedulers {
            s.undo_epoch();
        }
    }
}
