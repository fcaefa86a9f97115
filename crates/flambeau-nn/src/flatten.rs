//! `nn.Flatten`.

use candle_core::{Module, Tensor};

/// Flattens dimensions `start_dim..=end_dim` into one (PyTorch's default: 1 to -1).
#[derive(Debug, Clone, Copy)]
pub struct Flatten {
    start_dim: usize,
    end_dim: isize,
}

impl Flatten {
    /// `end_dim` may be negative, counting from the last dimension (-1).
    pub fn new(start_dim: usize, end_dim: isize) -> Self {
        Self { start_dim, end_dim }
    }
}

impl Default for Flatten {
    fn default() -> Self {
        Self::new(1, -1)
    }
}

impl Module for Flatten {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let rank = xs.rank() as isize;
        let end = if self.end_dim < 0 {
            rank + self.end_dim
        } else {
            self.end_dim
        };
        if end < 0 || end >= rank.max(1) || self.start_dim as isize > end {
            candle_core::bail!(
                "Flatten({}, {}) does not fit a tensor of rank {rank}",
                self.start_dim,
                self.end_dim
            )
        }
        xs.flatten(self.start_dim, end as usize)
    }
}
