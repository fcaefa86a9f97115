//! # flambeau-kernels
//!
//! The custom ops behind flambeau's layers and optimizers: GEMM-based convolution with a full
//! backward pass, fused batch normalisation (with ReLU, and with residual add + ReLU), ReLU,
//! max pooling with a backward pass, and the fused SGD update. Each is a fast CPU kernel, and each
//! has a device-generic path built from candle ops (what runs on a GPU, and on the CPU with
//! `FLAMBEAU_KERNELS=generic`: see [`mode`]). [`runtime`] holds the process-wide CPU settings a
//! training loop may opt into; [`device`] opens CUDA devices and orders every hand-off of device
//! tensors between threads and streams.

pub mod batch_norm;
pub mod conv2d;
mod conv2d_batched;
mod conv_params;
#[cfg(feature = "cuda")]
pub mod cuda_memory;
pub mod device;
mod gemm;
mod generic_conv2d;
mod generic_max_pool;
mod generic_window;
mod im2col;
pub mod max_pool;
pub mod mode;
pub mod relu;
pub mod runtime;
pub mod sgd;
mod storage;
mod transpose;
mod uninit;

pub use conv2d::conv2d;
pub use conv_params::ConvParams;
pub use mode::{kernel_mode, set_kernel_mode, KernelMode};
