//! The tests' two-layer perceptron (PyTorch's `Mlp` of xtask/fixtures/parallel.py): no batch
//! statistics, so every split of a batch gives the same gradient.

use candle_core::{Module, ModuleT, Tensor};
use flambeau_core::VarBuilder;
use flambeau_nn::Linear;

/// `fc2(tanh(fc1(x)))`, 12 → 16 → 5.
pub struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

impl ModuleT for Mlp {
    fn forward_t(&self, x: &Tensor, _train: bool) -> candle_core::Result<Tensor> {
        self.fc2.forward(&self.fc1.forward(x)?.tanh()?)
    }
}

/// The constructor every replica is built with.
pub fn build(vb: VarBuilder) -> flambeau_core::Result<Mlp> {
    Ok(Mlp {
        fc1: Linear::new(vb.pp("fc1"), 12, 16, true)?,
        fc2: Linear::new(vb.pp("fc2"), 16, 5, true)?,
    })
}
