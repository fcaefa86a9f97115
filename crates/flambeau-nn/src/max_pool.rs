//! `nn.MaxPool2d`: a layer around flambeau-kernels' max pooling (which has a real backward pass).

use candle_core::{Module, Tensor};
pub use flambeau_kernels::max_pool::{max_pool2d, MaxPool2dConfig};

/// 2-D max pooling over `[N, C, H, W]`.
#[derive(Debug, Clone, Copy)]
pub struct MaxPool2d {
    config: MaxPool2dConfig,
}

impl MaxPool2d {
    /// A max-pool layer (it has no parameters).
    pub fn new(config: MaxPool2dConfig) -> Self {
        Self { config }
    }
}

impl Module for MaxPool2d {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        max_pool2d(xs, &self.config)
    }
}
