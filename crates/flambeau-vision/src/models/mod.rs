//! Model architectures.

mod basic_block;
mod bottleneck;
mod downsample;
pub mod resnet;

pub use resnet::{ResNet, ResNetConfig};
