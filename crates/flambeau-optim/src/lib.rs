//! Optimizers and learning-rate schedulers with PyTorch's update rules and PyTorch's
//! `state_dict` layout, so a run can move between PyTorch and flambeau mid-training.
//!
//! ```no_run
//! # use flambeau_core::VarStore;
//! # use flambeau_optim::{Optimizer, ParamGroup, Sgd, SgdConfig};
//! # use candle_core::{Device, DType};
//! # fn main() -> flambeau_core::Result<()> {
//! let vs = VarStore::new(&Device::Cpu, DType::F32);
//! // … build a model on vs.root() …
//! let mut opt = Sgd::new(vec![ParamGroup::new(vs.parameters())], SgdConfig { lr: 0.1, momentum: 0.9, ..Default::default() })?;
//! # Ok(()) }
//! ```

mod adam;
mod clip;
mod kind;
pub mod lr_scheduler;
mod param_group;
mod sgd;
mod state_dict;
mod validate;

use candle_core::backprop::GradStore;

pub use adam::{Adam, AdamConfig};
pub use clip::{clip_grad_norm, clip_grad_value};
pub use kind::{OptimizerKind, SchedulerKind};
pub use param_group::{split_by_name, ParamGroup};
pub use sgd::{Sgd, SgdConfig};

use flambeau_core::{Result, Value};

/// What every optimizer offers: a step from gradients, per-group hyper-parameters, and
/// PyTorch-layout state.
pub trait Optimizer {
    /// The parameter groups, in order.
    fn param_groups(&self) -> &[ParamGroup];

    /// The parameter groups, mutably (schedulers set `lr`, `initial_lr`, momentum …).
    fn param_groups_mut(&mut self) -> &mut [ParamGroup];

    /// One update of every parameter that has a gradient in `grads` (others are skipped and get
    /// no state, as in PyTorch).
    fn step(&mut self, grads: &GradStore) -> Result<()>;

    /// `optimizer.state_dict()` in PyTorch's layout.
    fn state_dict(&self) -> Value;

    /// `optimizer.load_state_dict(sd)`: checks group count and sizes as PyTorch does, moves state
    /// to each parameter's device and dtype, keeps unknown group keys.
    fn load_state_dict(&mut self, state: &Value) -> Result<()>;

    /// Whether the optimizer's hyper-parameters include `betas` (Adam) rather than `momentum`.
    fn uses_betas(&self) -> bool;

    /// The learning rate of a group.
    fn lr(&self, group: usize) -> f64 {
        self.param_groups()[group].lr()
    }

    /// Sets the learning rate of a group.
    fn set_lr(&mut self, group: usize, lr: f64) {
        self.param_groups_mut()[group].set_lr(lr)
    }
}
