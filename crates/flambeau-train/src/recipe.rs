//! [`Recipe`]: the optimizer and learning-rate schedule of an image-classification run, with
//! torchvision's defaults (SGD with Nesterov momentum 0.9, cosine annealing), and what a saved
//! checkpoint fixes of it ([`Recipe::saved_choices`]) so that a run continues with the
//! optimizer and schedule it was started with — PyTorch's checkpoints included.
//!
//! ```
//! use candle_core::{DType, Device};
//! use flambeau_core::VarStore;
//! use flambeau_train::recipe::{OptimizerChoice, Recipe, SchedulerChoice};
//!
//! # fn main() -> flambeau_train::Result<()> {
//! let vs = VarStore::new(&Device::Cpu, DType::F32);
//! let recipe = Recipe {
//!     optimizer: OptimizerChoice::AdamW,
//!     scheduler: SchedulerChoice::OneCycle,
//!     ..Recipe::new(10)
//! };
//! let mut opt = recipe.build_optimizer(&vs)?;
//! let sched = recipe.build_scheduler(100, opt.as_mut())?.expect("OneCycleLR");
//! assert!(recipe.scheduler.steps_per_batch());
//! # let _ = sched; Ok(()) }
//! ```

use flambeau_core::{Value, VarStore};
use flambeau_optim::lr_scheduler::{
    CosineAnnealingLr, LrScheduler, MultiStepLr, OneCycleLr, Scheduler, StepLr,
};
use flambeau_optim::{
    Adam, AdamConfig, Optimizer, OptimizerKind, ParamGroup, SchedulerKind, Sgd, SgdConfig,
};
use flambeau_serialize::Checkpoint;

use crate::{Error, Result};

/// The optimizer of a [`Recipe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OptimizerChoice {
    /// SGD with momentum 0.9 and Nesterov (torchvision's recipe); lr 0.02, weight decay 5e-4.
    #[default]
    Sgd,
    /// AdamW (decoupled weight decay); lr 1e-3, weight decay 0.01.
    AdamW,
}

impl OptimizerChoice {
    /// The optimizer that continues a saved `optimizer.state_dict()`: Adam-family state is
    /// continued as AdamW, the one Adam variant a recipe runs.
    pub fn of_state_dict(state: &Value) -> Self {
        match OptimizerKind::of_state_dict(state) {
            OptimizerKind::Sgd => OptimizerChoice::Sgd,
            OptimizerKind::Adam => OptimizerChoice::AdamW,
        }
    }

    /// The learning rate when none is given.
    pub fn default_lr(self) -> f64 {
        match self {
            OptimizerChoice::Sgd => 0.02,
            OptimizerChoice::AdamW => 1e-3,
        }
    }

    /// The weight decay when none is given.
    pub fn default_weight_decay(self) -> f64 {
        match self {
            OptimizerChoice::Sgd => 5e-4,
            OptimizerChoice::AdamW => 0.01,
        }
    }

    /// Its name in lower case: `sgd`, `adamw`.
    pub fn name(self) -> &'static str {
        match self {
            OptimizerChoice::Sgd => "sgd",
            OptimizerChoice::AdamW => "adamw",
        }
    }
}

/// The learning-rate schedule of a [`Recipe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SchedulerChoice {
    /// A constant learning rate.
    Constant,
    /// StepLR: multiply by `gamma` every `step_size` epochs.
    Step,
    /// MultiStepLR: multiply by `gamma` at each of the `milestones` (epochs).
    MultiStep,
    /// CosineAnnealingLR over the run's epochs.
    #[default]
    Cosine,
    /// OneCycleLR over the run's steps (stepped every batch; the learning rate is the peak).
    OneCycle,
}

impl SchedulerChoice {
    /// The schedule that continues a saved `scheduler.state_dict()`, or an error naming its
    /// fields when it is none of the four a recipe runs.
    pub fn of_state_dict(state: &Value) -> Result<Self> {
        Ok(match SchedulerKind::of_state_dict(state) {
            Some(SchedulerKind::Step) => SchedulerChoice::Step,
            Some(SchedulerKind::MultiStep) => SchedulerChoice::MultiStep,
            Some(SchedulerKind::Cosine) => SchedulerChoice::Cosine,
            Some(SchedulerKind::OneCycle) => SchedulerChoice::OneCycle,
            None => {
                let fields = state
                    .as_dict()
                    .map(|d| d.str_keys().map(String::from).collect())
                    .unwrap_or_default();
                return Err(Error::UnknownScheduler { fields });
            }
        })
    }

    /// Whether it steps after every batch (OneCycleLR) rather than after every epoch.
    pub fn steps_per_batch(self) -> bool {
        self == SchedulerChoice::OneCycle
    }

    /// Its name in lower case: `none`, `step`, `multistep`, `cosine`, `onecycle`.
    pub fn name(self) -> &'static str {
        match self {
            SchedulerChoice::Constant => "none",
            SchedulerChoice::Step => "step",
            SchedulerChoice::MultiStep => "multistep",
            SchedulerChoice::Cosine => "cosine",
            SchedulerChoice::OneCycle => "onecycle",
        }
    }
}

/// An optimizer and a learning-rate schedule; `None` fields take the optimizer's or the run's
/// defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Recipe {
    /// The optimizer.
    pub optimizer: OptimizerChoice,
    /// Learning rate (the peak for OneCycleLR) [default: [`OptimizerChoice::default_lr`]].
    pub lr: Option<f64>,
    /// Weight decay [default: [`OptimizerChoice::default_weight_decay`]].
    pub weight_decay: Option<f64>,
    /// The schedule.
    pub scheduler: SchedulerChoice,
    /// Epochs of the run, which the schedules are laid over.
    pub epochs: u64,
    /// StepLR's period in epochs [default: a third of the epochs, at least 1].
    pub step_size: Option<i64>,
    /// Decay factor of StepLR and MultiStepLR.
    pub gamma: f64,
    /// MultiStepLR's milestones (epochs) [default when empty: half and three quarters of the
    /// epochs].
    pub milestones: Vec<i64>,
}

impl Recipe {
    /// torchvision's recipe over `epochs`: SGD, cosine annealing, every default.
    pub fn new(epochs: u64) -> Self {
        Self {
            optimizer: OptimizerChoice::default(),
            lr: None,
            weight_decay: None,
            scheduler: SchedulerChoice::default(),
            epochs,
            step_size: None,
            gamma: 0.1,
            milestones: Vec::new(),
        }
    }

    /// The learning rate the optimizer starts from.
    pub fn lr(&self) -> f64 {
        self.lr.unwrap_or(self.optimizer.default_lr())
    }

    /// The weight decay of the optimizer.
    pub fn weight_decay(&self) -> f64 {
        self.weight_decay
            .unwrap_or(self.optimizer.default_weight_decay())
    }

    /// What `ckpt` fixes of the recipe that continues it: the kind of its saved optimizer
    /// (see [`OptimizerChoice::of_state_dict`]) and of its saved schedule — a constant one when
    /// it saved an optimizer without a scheduler. `None` for what it does not fix.
    pub fn saved_choices(
        ckpt: &Checkpoint,
    ) -> Result<(Option<OptimizerChoice>, Option<SchedulerChoice>)> {
        let optimizer = ckpt.optimizer.as_ref().map(OptimizerChoice::of_state_dict);
        let scheduler = match &ckpt.scheduler {
            Some(s) => Some(SchedulerChoice::of_state_dict(s)?),
            None if ckpt.optimizer.is_some() => Some(SchedulerChoice::Constant),
            None => None,
        };
        Ok((optimizer, scheduler))
    }

    /// A new optimizer over all of `vs`'s parameters, in one group.
    pub fn build_optimizer(&self, vs: &VarStore) -> Result<Box<dyn Optimizer>> {
        let groups = vec![ParamGroup::new(vs.parameters())];
        let (lr, weight_decay) = (self.lr(), self.weight_decay());
        Ok(match self.optimizer {
            OptimizerChoice::Sgd => Box::new(Sgd::new(
                groups,
                SgdConfig {
                    lr,
                    momentum: 0.9,
                    weight_decay,
                    nesterov: true,
                    ..Default::default()
                },
            )?),
            OptimizerChoice::AdamW => Box::new(Adam::adamw(
                groups,
                AdamConfig {
                    lr,
                    weight_decay,
                    ..AdamConfig::adamw()
                },
            )?),
        })
    }

    /// A new scheduler for `opt` (its initial step sets the optimizer's learning rate, as in
    /// PyTorch); `None` for a constant learning rate. OneCycleLR spans
    /// `epochs × steps_per_epoch` steps.
    pub fn build_scheduler(
        &self,
        steps_per_epoch: usize,
        opt: &mut dyn Optimizer,
    ) -> Result<Option<Box<dyn LrScheduler>>> {
        let epochs = self.epochs as i64;
        Ok(Some(match self.scheduler {
            SchedulerChoice::Constant => return Ok(None),
            SchedulerChoice::Step => {
                let step_size = self.step_size.unwrap_or((epochs / 3).max(1));
                let gamma = self.gamma;
                Box::new(Scheduler::new(StepLr { step_size, gamma }, opt)?)
            }
            SchedulerChoice::MultiStep => {
                let milestones = if self.milestones.is_empty() {
                    vec![(epochs / 2).max(1), (epochs * 3 / 4).max(1)]
                } else {
                    self.milestones.clone()
                };
                Box::new(Scheduler::new(
                    MultiStepLr::new(&milestones, self.gamma),
                    opt,
                )?)
            }
            SchedulerChoice::Cosine => Box::new(Scheduler::new(
                CosineAnnealingLr {
                    t_max: epochs.max(1),
                    eta_min: 0.0,
                },
                opt,
            )?),
            SchedulerChoice::OneCycle => {
                let total = (self.epochs as usize * steps_per_epoch).max(1) as i64;
                let max_lr = opt.param_groups().iter().map(|g| g.lr()).collect();
                Box::new(Scheduler::new(OneCycleLr::new(max_lr, total), opt)?)
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};
    use flambeau_core::{Dict, DictKind, Init, StateDict};

    use super::*;

    fn store() -> VarStore {
        let vs = VarStore::new(&Device::Cpu, DType::F32);
        vs.root().param("w", (2, 2), Init::Const(1.0)).unwrap();
        vs
    }

    #[test]
    fn defaults_are_torchvision_s() {
        let r = Recipe::new(9);
        assert_eq!(r.optimizer, OptimizerChoice::Sgd);
        assert_eq!(r.scheduler, SchedulerChoice::Cosine);
        assert_eq!((r.lr(), r.weight_decay()), (0.02, 5e-4));
        let adamw = Recipe {
            optimizer: OptimizerChoice::AdamW,
            lr: Some(0.5),
            ..r
        };
        assert_eq!((adamw.lr(), adamw.weight_decay()), (0.5, 0.01));
    }

    #[test]
    fn every_schedule_builds_and_sets_the_learning_rate() {
        let vs = store();
        for scheduler in [
            SchedulerChoice::Constant,
            SchedulerChoice::Step,
            SchedulerChoice::MultiStep,
            SchedulerChoice::Cosine,
            SchedulerChoice::OneCycle,
        ] {
            let r = Recipe {
                scheduler,
                ..Recipe::new(6)
            };
            let mut opt = r.build_optimizer(&vs).unwrap();
            let sched = r.build_scheduler(4, opt.as_mut()).unwrap();
            assert_eq!(sched.is_none(), scheduler == SchedulerChoice::Constant);
            assert_eq!(
                scheduler.steps_per_batch(),
                scheduler == SchedulerChoice::OneCycle
            );
            if let Some(s) = sched {
                // Saved and recognised again.
                let back = SchedulerChoice::of_state_dict(&s.state_dict()).unwrap();
                assert_eq!(back, scheduler);
            }
            if scheduler == SchedulerChoice::OneCycle {
                assert!(opt.lr(0) < 0.02, "OneCycleLR starts below its peak");
            } else {
                assert_eq!(opt.lr(0), 0.02);
            }
        }
    }

    #[test]
    fn a_checkpoint_fixes_what_it_saved() {
        let vs = store();
        let r = Recipe {
            optimizer: OptimizerChoice::AdamW,
            scheduler: SchedulerChoice::Step,
            ..Recipe::new(3)
        };
        let mut opt = r.build_optimizer(&vs).unwrap();
        let sched = r.build_scheduler(1, opt.as_mut()).unwrap().unwrap();
        let mut ckpt = Checkpoint::new(StateDict::new());
        assert_eq!(Recipe::saved_choices(&ckpt).unwrap(), (None, None));
        ckpt.optimizer = Some(opt.state_dict());
        assert_eq!(
            Recipe::saved_choices(&ckpt).unwrap(),
            (
                Some(OptimizerChoice::AdamW),
                Some(SchedulerChoice::Constant)
            )
        );
        ckpt.scheduler = Some(sched.state_dict());
        assert_eq!(
            Recipe::saved_choices(&ckpt).unwrap().1,
            Some(SchedulerChoice::Step)
        );
        let mut odd = Dict::new(DictKind::Plain);
        odd.insert("gamma_schedule", 1i64);
        ckpt.scheduler = Some(Value::Dict(odd));
        let e = Recipe::saved_choices(&ckpt).unwrap_err().to_string();
        assert!(e.contains("(fields [\"gamma_schedule\"])"), "{e}");
    }

    #[test]
    fn names_are_the_flag_values() {
        assert_eq!(OptimizerChoice::AdamW.name(), "adamw");
        assert_eq!(SchedulerChoice::Constant.name(), "none");
        assert_eq!(SchedulerChoice::OneCycle.name(), "onecycle");
    }
}
