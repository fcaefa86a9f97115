//! `nn.Dropout`.

use candle_core::{ModuleT, Tensor};

/// Zeroes each element with probability `p` in training and scales the rest by `1/(1-p)`;
/// the identity in evaluation.
#[derive(Debug, Clone, Copy)]
pub struct Dropout {
    p: f32,
}

impl Dropout {
    /// `p` in `[0, 1)`.
    pub fn new(p: f32) -> Self {
        Self { p }
    }
}

impl ModuleT for Dropout {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        if train && self.p > 0.0 {
            candle_nn::ops::dropout(xs, self.p)
        } else {
            Ok(xs.clone())
        }
    }
}
