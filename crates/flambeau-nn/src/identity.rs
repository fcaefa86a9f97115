//! `nn.Identity`.

use candle_core::{Module, Tensor};

/// Returns its input (a placeholder where an architecture has an optional layer).
#[derive(Debug, Clone, Copy, Default)]
pub struct Identity;

impl Module for Identity {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        Ok(xs.clone())
    }
}
