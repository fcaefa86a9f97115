//! CPU kernels behind the layers: GEMM-based convolution with a full backward pass, fused batch
//! normalisation, ReLU (and residual add + ReLU) in one parallel pass.

pub mod batch_norm;
pub mod conv2d;
mod conv2d_batched;
mod gemm;
mod im2col;
pub mod relu;
pub(crate) mod storage;
mod transpose;
mod uninit;

pub use conv2d::{conv2d, ConvParams};
