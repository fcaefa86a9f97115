//! Model architectures.

mod basic_block;
mod bottleneck;
mod checkpoint;
mod downsample;
mod infer;
pub mod resnet;
mod seeded;

pub use checkpoint::ResNetCheckpoint;
pub use infer::ARCHITECTURES;
pub use resnet::{ResNet, ResNetConfig};
