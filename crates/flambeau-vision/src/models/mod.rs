//! Model architectures.

mod basic_block;
mod bottleneck;
pub mod resnet;

pub use resnet::{ResNet, ResNetConfig};
