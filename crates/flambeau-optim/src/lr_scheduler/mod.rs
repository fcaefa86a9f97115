//! Learning-rate schedulers with PyTorch's (recursive, "chainable") formulas and PyTorch's
//! `state_dict` layout (the scheduler's `__dict__` minus the optimizer).
//!
//! A [`Scheduler`] pairs the shared bookkeeping of `torch.optim.lr_scheduler.LRScheduler`
//! (`base_lrs`, `last_epoch`, `_step_count`, `_last_lr`, `initial_lr` in the groups) with one
//! [`Schedule`] formula. [`SequentialLr`] chains schedulers (warm-up, then decay).

mod cosine_annealing;
mod exponential;
mod linear;
mod multi_step;
mod one_cycle;
mod sequential;
mod step;

pub use cosine_annealing::CosineAnnealingLr;
pub use exponential::ExponentialLr;
pub use linear::LinearLr;
pub use multi_step::MultiStepLr;
pub use one_cycle::{AnnealStrategy, OneCycleLr};
pub use sequential::SequentialLr;
pub use step::StepLr;

use super::{Optimizer, ParamGroup};
use crate::validate;
use flambeau_core::value::{Dict, DictKind, Value};
use flambeau_core::{Error, Result};

/// What every scheduler offers.
pub trait LrScheduler {
    /// One scheduler step (call after `optimizer.step()`, once per epoch or iteration).
    fn step(&mut self, opt: &mut dyn Optimizer) -> Result<()>;
    /// The learning rates set by the last step, one per group (`get_last_lr()`).
    fn last_lr(&self) -> Vec<f64>;
    /// The number of steps taken (`last_epoch`).
    fn last_epoch(&self) -> i64;
    /// `scheduler.state_dict()` in PyTorch's layout.
    fn state_dict(&self) -> Value;
    /// `scheduler.load_state_dict(sd)`.
    fn load_state_dict(&mut self, state: &Value) -> Result<()>;
    /// PyTorch's `_initial_step` (used by [`SequentialLr`]).
    fn initial_step(&mut self, opt: &mut dyn Optimizer) -> Result<()>;
    /// PyTorch's `_update_lr(epoch)`: jump to `epoch` with the closed form (used by [`SequentialLr`]).
    fn update_lr_at(&mut self, opt: &mut dyn Optimizer, epoch: i64) -> Result<()>;
    /// PyTorch's `recursive_undo`: one step back in `last_epoch` (used by [`SequentialLr`]).
    fn undo_epoch(&mut self);
}

/// The bookkeeping every PyTorch scheduler keeps.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerState {
    /// The groups' `initial_lr` when the scheduler was built.
    pub base_lrs: Vec<f64>,
    /// Steps taken; -1 before the initial step.
    pub last_epoch: i64,
    /// Calls of `step` (including the initial one).
    pub step_count: i64,
    /// True only during the initial step.
    pub is_initial: bool,
    /// The groups' learning rates after the last step.
    pub last_lr: Vec<f64>,
}

/// The formula of one scheduler kind.
pub trait Schedule {
    /// Checks the hyper-parameters (called first by [`Scheduler::new`]): NaN, infinity and
    /// values that would divide by zero are refused with the value and what is expected.
    fn validate(&self) -> Result<()> {
        Ok(())
    }
    /// Called before the base class sets `initial_lr` (OneCycleLR sets its own).
    fn prepare(&mut self, _groups: &mut [ParamGroup], _uses_betas: bool) -> Result<()> {
        Ok(())
    }
    /// PyTorch's `get_lr()` (the recursive form); may also set group momentum.
    fn get_lr(&self, s: &SchedulerState, groups: &mut [ParamGroup]) -> Result<Vec<f64>>;
    /// PyTorch's `_get_closed_form_lr()`, when the kind has one.
    fn closed_form_lr(&self, _s: &SchedulerState) -> Option<Vec<f64>> {
        None
    }
    /// The kind's own fields, in PyTorch's `__dict__` order (they come before `base_lrs`).
    fn fields(&self) -> Vec<(&'static str, Value)>;
    /// Restores the kind's own fields from a state dict.
    fn load_fields(&mut self, state: &Dict) -> Result<()>;
}

/// A scheduler: shared bookkeeping plus one [`Schedule`].
#[derive(Debug, Clone)]
pub struct Scheduler<S> {
    /// The formula and its hyper-parameters.
    pub schedule: S,
    state: SchedulerState,
}

/// A decay factor: finite and ≥ 0 (a negative one would make the learning rate negative,
/// which the optimizers refuse).
pub(crate) fn check_gamma(gamma: f64) -> Result<()> {
    validate::non_negative("gamma", "Invalid gamma value", gamma)
}

/// A period or length in steps: at least 1 (PyTorch divides by it).
pub(crate) fn check_steps(what: &str, n: i64) -> Result<()> {
    if n >= 1 {
        return Ok(());
    }
    Err(Error::invalid_argument(
        what,
        format!("Expected positive integer {what}, but got {n}"),
    ))
}

fn group_lrs(opt: &dyn Optimizer) -> Vec<f64> {
    opt.param_groups().iter().map(ParamGroup::lr).collect()
}

pub(crate) fn field<'a>(d: &'a Dict, key: &str) -> Result<&'a Value> {
    d.get(key).ok_or_else(|| {
        Error::invalid_state("scheduler", format!("scheduler state_dict has no `{key}`"))
    })
}

pub(crate) fn field_f64(d: &Dict, key: &str) -> Result<f64> {
    field(d, key)?.as_f64().ok_or_else(|| {
        Error::invalid_state(
            "scheduler",
            format!("scheduler state `{key}` is not a number"),
        )
    })
}

pub(crate) fn field_i64(d: &Dict, key: &str) -> Result<i64> {
    field(d, key)?.as_i64().ok_or_else(|| {
        Error::invalid_state(
            "scheduler",
            format!("scheduler state `{key}` is not an integer"),
        )
    })
}

pub(crate) fn field_f64_list(d: &Dict, key: &str) -> Result<Vec<f64>> {
    field(d, key)?
        .as_seq()
        .and_then(|s| s.iter().map(Value::as_f64).collect())
        .ok_or_else(|| {
            Error::invalid_state(
                "scheduler",
                format!("scheduler state `{key}` is not a list of numbers"),
            )
        })
}

pub(crate) fn floats(v: &[f64]) -> Value {
    Value::List(v.iter().map(|x| Value::Float(*x)).collect())
}

impl<S: Schedule> Scheduler<S> {
    /// Builds the scheduler on `opt` as PyTorch's constructor does (with `last_epoch=-1`):
    /// checks the hyper-parameters ([`Schedule::validate`]), records `initial_lr` in every
    /// group and takes the initial step.
    pub fn new(mut schedule: S, opt: &mut dyn Optimizer) -> Result<Self> {
        schedule.validate()?;
        let uses_betas = opt.uses_betas();
        schedule.prepare(opt.param_groups_mut(), uses_betas)?;
        for g in opt.param_groups_mut() {
            if g.options.get("initial_lr").is_none() {
                let lr = g.lr();
                g.set("initial_lr", lr);
            }
        }
        let base_lrs = opt
            .param_groups()
            .iter()
            .map(|g| g.get_f64("initial_lr"))
            .collect::<Result<Vec<_>>>()?;
        let mut s = Self {
            schedule,
            state: SchedulerState {
                base_lrs,
                last_epoch: -1,
                step_count: 0,
                is_initial: false,
                last_lr: Vec::new(),
            },
        };
        s.initial_step(opt)?;
        Ok(s)
    }

    /// The shared bookkeeping.
    pub fn state(&self) -> &SchedulerState {
        &self.state
    }

    fn update_lr(&mut self, opt: &mut dyn Optimizer, epoch: Option<i64>) -> Result<()> {
        let values = match epoch {
            None => {
                self.state.last_epoch += 1;
                self.schedule.get_lr(&self.state, opt.param_groups_mut())?
            }
            Some(e) => {
                self.state.last_epoch = e;
                match self.schedule.closed_form_lr(&self.state) {
                    Some(v) => v,
                    None => self.schedule.get_lr(&self.state, opt.param_groups_mut())?,
                }
            }
        };
        for (g, lr) in opt.param_groups_mut().iter_mut().zip(values) {
            g.set_lr(lr);
        }
        self.state.last_lr = group_lrs(opt);
        Ok(())
    }
}

impl<S: Schedule> LrScheduler for Scheduler<S> {
    fn step(&mut self, opt: &mut dyn Optimizer) -> Result<()> {
        self.state.step_count += 1;
        self.update_lr(opt, None)
    }

    fn last_lr(&self) -> Vec<f64> {
        self.state.last_lr.clone()
    }

    fn last_epoch(&self) -> i64 {
        self.state.last_epoch
    }

    fn state_dict(&self) -> Value {
        let mut d = Dict::new(DictKind::Plain);
        for (k, v) in self.schedule.fields() {
            d.insert(k, v);
        }
        d.insert("base_lrs", floats(&self.state.base_lrs));
        d.insert("last_epoch", self.state.last_epoch);
        d.insert("_step_count", self.state.step_count);
        d.insert("_is_initial", self.state.is_initial);
        d.insert("_get_lr_called_within_step", false);
        d.insert("_last_lr", floats(&self.state.last_lr));
        Value::Dict(d)
    }

    fn load_state_dict(&mut self, state: &Value) -> Result<()> {
        let d = state.as_dict().ok_or_else(|| {
            Error::invalid_state("scheduler", "a scheduler state_dict must be a dict")
        })?;
        self.schedule.load_fields(d)?;
        self.state.base_lrs = field_f64_list(d, "base_lrs")?;
        self.state.last_epoch = field_i64(d, "last_epoch")?;
        self.state.step_count = field_i64(d, "_step_count")?;
        self.state.last_lr = field_f64_list(d, "_last_lr")?;
        Ok(())
    }

    fn initial_step(&mut self, opt: &mut dyn Optimizer) -> Result<()> {
        self.state.step_count = 0;
        self.state.is_initial = true;
        let r = self.step(opt);
        self.state.is_initial = false;
        r
    }

    fn update_lr_at(&mut self, opt: &mut dyn Optimizer, epoch: i64) -> Result<()> {
        self.update_lr(opt, Some(epoch))
    }

    fn undo_epoch(&mut self) {
        self.state.last_epoch -= 1;
    }
}

/// The groups' current learning rates (what PyTorch's `_param_groups_val_list(opt, "lr")` returns).
pub(crate) fn lrs(groups: &[ParamGroup]) -> Vec<f64> {
    groups.iter().map(ParamGroup::lr).collect()
}
