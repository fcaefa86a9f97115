//! `flambeau train`'s recipe: the optimizer and learning-rate schedule the flags (or a
//! checkpoint's recognised state) ask for, with torchvision's defaults.

use anyhow::{bail, Result};
use flambeau_core::{Value, VarStore};
use flambeau_optim::lr_scheduler::{
    CosineAnnealingLr, LrScheduler, MultiStepLr, OneCycleLr, Scheduler, StepLr,
};
use flambeau_optim::{Adam, AdamConfig, Optimizer, ParamGroup, Sgd, SgdConfig};

use super::args::{Args, OptimizerKind, SchedulerKind};

/// The `--optimizer` that continues a checkpoint's optimizer state (Adam-family state is
/// continued as AdamW, the one Adam variant `flambeau train` runs).
pub fn optimizer_of(state: &Value) -> OptimizerKind {
    match flambeau_optim::OptimizerKind::of_state_dict(state) {
        flambeau_optim::OptimizerKind::Sgd => OptimizerKind::Sgd,
        flambeau_optim::OptimizerKind::Adam => OptimizerKind::Adamw,
    }
}

/// The `--scheduler` that continues a checkpoint's scheduler state.
pub fn scheduler_of(state: &Value) -> Result<SchedulerKind> {
    use flambeau_optim::SchedulerKind as K;
    Ok(match K::of_state_dict(state) {
        Some(K::Step) => SchedulerKind::Step,
        Some(K::MultiStep) => SchedulerKind::Multistep,
        Some(K::Cosine) => SchedulerKind::Cosine,
        Some(K::OneCycle) => SchedulerKind::Onecycle,
        None => {
            let keys: Vec<&str> = state
                .as_dict()
                .map(|d| d.str_keys().collect())
                .unwrap_or_default();
            bail!(
                "the checkpoint's scheduler (fields {keys:?}) is not one `flambeau train` runs ({})",
                K::CLASS_NAMES.join(", ")
            )
        }
    })
}

/// The learning rate when `--lr` is not given.
pub fn default_lr(kind: OptimizerKind) -> f64 {
    match kind {
        OptimizerKind::Sgd => 0.02,
        OptimizerKind::Adamw => 1e-3,
    }
}

/// A new optimizer over all of the model's parameters.
pub fn build_optimizer(
    kind: OptimizerKind,
    vs: &VarStore,
    args: &Args,
) -> Result<Box<dyn Optimizer>> {
    let lr = args.lr.unwrap_or(default_lr(kind));
    let groups = vec![ParamGroup::new(vs.parameters())];
    Ok(match kind {
        OptimizerKind::Sgd => Box::new(Sgd::new(
            groups,
            SgdConfig {
                lr,
                momentum: 0.9,
                weight_decay: args.weight_decay.unwrap_or(5e-4),
                nesterov: true,
                ..Default::default()
            },
        )?),
        OptimizerKind::Adamw => Box::new(Adam::adamw(
            groups,
            AdamConfig {
                lr,
                weight_decay: args.weight_decay.unwrap_or(0.01),
                ..AdamConfig::adamw()
            },
        )?),
    })
}

/// A new scheduler (its initial step sets the optimizer's learning rate, as in PyTorch).
/// `None` for a constant learning rate.
pub fn build_scheduler(
    kind: SchedulerKind,
    args: &Args,
    steps_per_epoch: usize,
    opt: &mut dyn Optimizer,
) -> Result<Option<Box<dyn LrScheduler>>> {
    let epochs = args.epochs as i64;
    Ok(Some(match kind {
        SchedulerKind::None => return Ok(None),
        SchedulerKind::Step => {
            let step_size = args.step_size.unwrap_or((epochs / 3).max(1));
            Box::new(Scheduler::new(
                StepLr {
                    step_size,
                    gamma: args.gamma,
                },
                opt,
            )?)
        }
        SchedulerKind::Multistep => {
            let milestones = if args.milestones.is_empty() {
                vec![(epochs / 2).max(1), (epochs * 3 / 4).max(1)]
            } else {
                args.milestones.clone()
            };
            Box::new(Scheduler::new(
                MultiStepLr::new(&milestones, args.gamma),
                opt,
            )?)
        }
        SchedulerKind::Cosine => Box::new(Scheduler::new(
            CosineAnnealingLr {
                t_max: epochs.max(1),
                eta_min: 0.0,
            },
            opt,
        )?),
        SchedulerKind::Onecycle => {
            let total = (epochs as usize * steps_per_epoch).max(1) as i64;
            let max_lr = opt.param_groups().iter().map(|g| g.lr()).collect();
            Box::new(Scheduler::new(OneCycleLr::new(max_lr, total), opt)?)
        }
    }))
}

/// Whether the scheduler steps after every batch (OneCycleLR) rather than every epoch.
pub fn steps_per_batch(kind: SchedulerKind) -> bool {
    use flambeau_optim::SchedulerKind as K;
    let library_kind = match kind {
        SchedulerKind::None => return false,
        SchedulerKind::Step => K::Step,
        SchedulerKind::Multistep => K::MultiStep,
        SchedulerKind::Cosine => K::Cosine,
        SchedulerKind::Onecycle => K::OneCycle,
    };
    library_kind.steps_per_batch()
}
