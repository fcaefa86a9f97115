//! Recognising which optimizer and which learning-rate schedule wrote a PyTorch
//! `state_dict()`, so that a run can be continued with the same ones.

use flambeau_core::Value;

/// The optimizer family a `optimizer.state_dict()` comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptimizerKind {
    /// `torch.optim.SGD` (groups have `momentum`, no `betas`).
    Sgd,
    /// `torch.optim.Adam` / `AdamW` (groups have `betas`).
    Adam,
}

impl OptimizerKind {
    /// The family that wrote `state`: Adam-family parameter groups have `betas`.
    pub fn of_state_dict(state: &Value) -> Self {
        let has_betas = state
            .get("param_groups")
            .and_then(Value::as_seq)
            .and_then(|g| g.first())
            .is_some_and(|g| g.get("betas").is_some());
        if has_betas {
            OptimizerKind::Adam
        } else {
            OptimizerKind::Sgd
        }
    }
}

/// The learning-rate schedulers flambeau can continue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedulerKind {
    /// `StepLR`.
    Step,
    /// `MultiStepLR`.
    MultiStep,
    /// `CosineAnnealingLR`.
    Cosine,
    /// `OneCycleLR`.
    OneCycle,
}

impl SchedulerKind {
    /// PyTorch's class names of the kinds, for messages.
    pub const CLASS_NAMES: [&'static str; 4] =
        ["StepLR", "MultiStepLR", "CosineAnnealingLR", "OneCycleLR"];

    /// The scheduler that wrote `state`, recognised by the fields only it has; `None` for any
    /// other scheduler.
    pub fn of_state_dict(state: &Value) -> Option<Self> {
        let has = |k: &str| state.get(k).is_some();
        if has("total_steps") {
            Some(SchedulerKind::OneCycle)
        } else if has("T_max") {
            Some(SchedulerKind::Cosine)
        } else if has("milestones") {
            Some(SchedulerKind::MultiStep)
        } else if has("step_size") {
            Some(SchedulerKind::Step)
        } else {
            None
        }
    }

    /// Whether PyTorch's recipe steps it after every batch (OneCycleLR) rather than after every
    /// epoch.
    pub fn steps_per_batch(self) -> bool {
        self == SchedulerKind::OneCycle
    }
}
