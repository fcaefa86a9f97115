//! Layers with PyTorch's names, initialisations and semantics, one per file. Each implements
//! candle's [`Module`](candle_core::Module) or [`ModuleT`](candle_core::ModuleT) (train vs eval)
//! and is trainable: gradients flow through every one of them.

mod activation;
mod adaptive_avg_pool;
mod batch_norm;
mod conv2d;
mod dropout;
mod flatten;
mod identity;
mod linear;
pub mod loss;
mod max_pool;
mod sequential;

pub use activation::ReLU;
pub use adaptive_avg_pool::AdaptiveAvgPool2d;
pub use batch_norm::{BatchNorm2d, BatchNormConfig};
pub use conv2d::{Conv2d, Conv2dConfig};
pub use dropout::Dropout;
pub use flatten::Flatten;
pub use identity::Identity;
pub use linear::Linear;
pub use max_pool::{max_pool2d, MaxPool2d, MaxPool2dConfig};
pub use sequential::Sequential;
