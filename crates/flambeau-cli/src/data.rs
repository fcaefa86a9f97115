//! `--data synthetic|cifar10:DIR|folder:DIR`: which images to train and evaluate on.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use flambeau_vision::data::{Augment, Cifar10, Dataset, ImageFolder, Normalize, Synthetic};

/// A dataset named on the command line.
#[derive(Debug, Clone, PartialEq)]
pub enum DataSpec {
    /// The embedded procedural set (needs nothing).
    Synthetic,
    /// The CIFAR-10 binary version (`data_batch_1.bin` …) in a directory.
    Cifar10(PathBuf),
    /// `DIR/train/<class>/*.png` and `DIR/val/<class>/*.png`.
    Folder(PathBuf),
}

impl FromStr for DataSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            None if s == "synthetic" => Ok(DataSpec::Synthetic),
            Some(("cifar10", dir)) if !dir.is_empty() => Ok(DataSpec::Cifar10(dir.into())),
            Some(("folder", dir)) if !dir.is_empty() => Ok(DataSpec::Folder(dir.into())),
            _ => Err(format!(
                "`{s}`: expected `synthetic`, `cifar10:DIR` or `folder:DIR`"
            )),
        }
    }
}

/// Sizes and seeds the datasets are built with.
#[derive(Debug, Clone, Copy)]
pub struct DataOptions {
    /// Synthetic training images.
    pub train_size: usize,
    /// Synthetic validation images.
    pub val_size: usize,
    /// Side of the square images of `folder:` data.
    pub image_size: u32,
    /// Seed of the synthetic images.
    pub seed: u64,
}

/// The datasets of one run and how to prepare their images.
pub struct Datasets {
    /// Training split.
    pub train: Arc<dyn Dataset>,
    /// Validation split.
    pub val: Arc<dyn Dataset>,
    /// Training augmentation.
    pub augment: Augment,
    /// Normalisation of both splits.
    pub normalize: Normalize,
    /// What was loaded, for messages.
    pub description: String,
}

impl DataSpec {
    /// Opens both splits.
    pub fn open(&self, opts: &DataOptions) -> Result<Datasets> {
        let (train, val, normalize, description): (Arc<dyn Dataset>, Arc<dyn Dataset>, _, _) =
            match self {
                DataSpec::Synthetic => {
                    if opts.train_size == 0 || opts.val_size == 0 {
                        bail!("--train-size and --val-size must be positive");
                    }
                    (
                        Arc::new(Synthetic::train(opts.train_size, opts.seed)),
                        Arc::new(Synthetic::val(opts.val_size, opts.seed)),
                        Normalize::cifar10(),
                        format!(
                            "synthetic shapes ({} train / {} val, 3x32x32, 10 classes)",
                            opts.train_size, opts.val_size
                        ),
                    )
                }
                DataSpec::Cifar10(dir) => (
                    Arc::new(Cifar10::train(dir).with_context(|| cifar_hint(dir))?),
                    Arc::new(Cifar10::test(dir).with_context(|| cifar_hint(dir))?),
                    Normalize::cifar10(),
                    format!("CIFAR-10 from {}", dir.display()),
                ),
                DataSpec::Folder(dir) => {
                    let open = |split: &str| {
                        let root = dir.join(split);
                        ImageFolder::new(&root, opts.image_size).with_context(|| {
                            format!(
                                "folder data needs {}/<class>/<image> (and the same for val)",
                                root.display()
                            )
                        })
                    };
                    let (train, val) = (open("train")?, open("val")?);
                    if train.classes() != val.classes() {
                        bail!(
                            "{}: train has classes {:?} but val has {:?}",
                            dir.display(),
                            train.classes(),
                            val.classes()
                        );
                    }
                    (
                        Arc::new(train),
                        Arc::new(val),
                        Normalize::imagenet(),
                        format!(
                            "image folder {} at {}x{}",
                            dir.display(),
                            opts.image_size,
                            opts.image_size
                        ),
                    )
                }
            };
        Ok(Datasets {
            train,
            val,
            augment: Augment::default(),
            normalize,
            description,
        })
    }
}

fn cifar_hint(dir: &std::path::Path) -> String {
    format!(
        "cifar10:{} must hold the binary version (data_batch_1.bin … data_batch_5.bin, test_batch.bin)",
        dir.display()
    )
}
