//! Datasets, augmentation and the data loader.

mod cifar10;
mod image_folder;
mod loader;
mod loader_value;
pub mod rng;
mod spec;
mod synthetic;
pub mod transforms;

pub use cifar10::Cifar10;
pub use image_folder::ImageFolder;
pub use loader::{Batch, DataLoader, LoaderConfig, LoaderState};
pub use spec::{DataOptions, DataSpec, DataSpecError, Datasets};
pub use synthetic::Synthetic;
pub use transforms::{Augment, Normalize};

use crate::Result;

/// One example: a `[C, H, W]` image as f32 in `[0, 1]` (row-major, channel first) and its label.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Pixels, `channels × height × width`.
    pub pixels: Vec<f32>,
    /// Channels (3 for RGB).
    pub channels: usize,
    /// Height.
    pub height: usize,
    /// Width.
    pub width: usize,
    /// Class index.
    pub label: u32,
}

/// A random-access collection of labelled images. Implementations are cheap to share across
/// threads: the loader calls `get` from background workers.
pub trait Dataset: Send + Sync {
    /// Number of examples.
    fn len(&self) -> usize;
    /// True when empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Example `index` (`index < len()`).
    fn get(&self, index: usize) -> Result<Sample>;
    /// Class names, index = label.
    fn classes(&self) -> Vec<String>;
}
