//! The optimizer and learning-rate schedule of a run, built from the command line or recognised
//! in a checkpoint's state.

use anyhow::{bail, Result};
use flambeau_core::{Value, VarStore};
use flambeau_optim::lr_scheduler::{
    CosineAnnealingLr, LrScheduler, MultiStepLr, OneCycleLr, Scheduler, StepLr,
};
use flambeau_optim::{Adam, AdamConfig, Optimizer, ParamGroup, Sgd, SgdConfig};

use super::args::{Args, OptimizerKind, SchedulerKind};

/// The optimizer that wrote this `optimizer.state_dict()`: Adam-family groups have `betas`.
pub fn optimizer_kind_of(state: &Value) -> OptimizerKind {
    let has_betas = state
        .get("param_groups")
        .and_then(Value::as_seq)
        .and_then(|g| g.first())
        .is_some_and(|g| g.get("betas").is_some());
    if has_betas {
        OptimizerKind::Adamw
    } else {
        OptimizerKind::Sgd
    }
}

/// The scheduler that wrote this `scheduler.state_dict()`, recognised by its fields.
pub fn scheduler_kind_of(state: &Value) -> Result<SchedulerKind> {
    let has = |k: &str| state.get(k).is_some();
    Ok(if has("total_steps") {
        SchedulerKind::Onecycle
    } else if has("T_max") {
        SchedulerKind::Cosine
    } else if has("milestones") {
        SchedulerKind::Multistep
    } else if has("step_size") {
        SchedulerKind::Step
    } else {
        let keys: Vec<&str> = state
            .as_dict()
            .map(|d| d.str_keys().collect())
            .unwrap_or_default();
        bail!(
            "the checkpoint's scheduler (fields {keys:?}) is not one `flambeau train` runs (StepLR, MultiStepLR, CosineAnnealingLR, OneCycleLR)"
        )
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
    kind == SchedulerKind::Onecycle
}
