//! [`DataSpec`]: a dataset named in one string — `synthetic`, `cifar10:DIR` or `folder:DIR` (the
//! `--data` of the `flambeau` command) — and [`DataSpec::open`], which builds both splits with
//! the normalisation that suits them, and their loaders.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use candle_core::Device;

use super::{
    Augment, Cifar10, DataLoader, Dataset, ImageFolder, LoaderConfig, Normalize, Synthetic,
};
use crate::{Error, Result};

/// A dataset named by a string: `synthetic`, `cifar10:DIR` or `folder:DIR`.
///
/// ```
/// use flambeau_vision::data::DataSpec;
/// let spec: DataSpec = "cifar10:/data/cifar".parse().unwrap();
/// assert_eq!(spec, DataSpec::Cifar10("/data/cifar".into()));
/// assert!("imagenet".parse::<DataSpec>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataSpec {
    /// The embedded procedural set ([`Synthetic`]: needs nothing).
    Synthetic,
    /// The CIFAR-10 binary version (`data_batch_1.bin` …) in a directory ([`Cifar10`]).
    Cifar10(PathBuf),
    /// `DIR/train/<class>/*.png` and `DIR/val/<class>/*.png` ([`ImageFolder`]).
    Folder(PathBuf),
}

/// A string that names no [`DataSpec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataSpecError(pub String);

impl fmt::Display for DataSpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}`: expected `synthetic`, `cifar10:DIR` or `folder:DIR`",
            self.0
        )
    }
}

impl std::error::Error for DataSpecError {}

impl FromStr for DataSpec {
    type Err = DataSpecError;

    fn from_str(s: &str) -> std::result::Result<Self, DataSpecError> {
        match s.split_once(':') {
            None if s == "synthetic" => Ok(DataSpec::Synthetic),
            Some(("cifar10", dir)) if !dir.is_empty() => Ok(DataSpec::Cifar10(dir.into())),
            Some(("folder", dir)) if !dir.is_empty() => Ok(DataSpec::Folder(dir.into())),
            _ => Err(DataSpecError(s.to_string())),
        }
    }
}

impl fmt::Display for DataSpec {
    /// The string [`DataSpec::from_str`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataSpec::Synthetic => write!(f, "synthetic"),
            DataSpec::Cifar10(dir) => write!(f, "cifar10:{}", dir.display()),
            DataSpec::Folder(dir) => write!(f, "folder:{}", dir.display()),
        }
    }
}

/// Sizes and seeds the datasets of a [`DataSpec`] are built with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
#[derive(Clone)]
pub struct Datasets {
    /// Training split.
    pub train: Arc<dyn Dataset>,
    /// Validation split.
    pub val: Arc<dyn Dataset>,
    /// Training augmentation.
    pub augment: Augment,
    /// Normalisation of both splits.
    pub normalize: Normalize,
    /// What was loaded, in words (`CIFAR-10 from DIR`), for messages.
    pub description: String,
}

impl DataSpec {
    /// Opens both splits: synthetic and CIFAR-10 data normalised with CIFAR-10's statistics,
    /// image folders with ImageNet's; an image folder's two splits must have the same classes.
    pub fn open(&self, opts: &DataOptions) -> Result<Datasets> {
        let (train, val, normalize, description): (Arc<dyn Dataset>, Arc<dyn Dataset>, _, _) =
            match self {
                DataSpec::Synthetic => {
                    if opts.train_size == 0 || opts.val_size == 0 {
                        return Err(Error::Config(
                            "synthetic data needs a positive train and val size".into(),
                        ));
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
                    Arc::new(Cifar10::train(dir).map_err(|e| cifar_needs(dir, e))?),
                    Arc::new(Cifar10::test(dir).map_err(|e| cifar_needs(dir, e))?),
                    Normalize::cifar10(),
                    format!("CIFAR-10 from {}", dir.display()),
                ),
                DataSpec::Folder(dir) => {
                    let open = |split: &str| {
                        let root = dir.join(split);
                        ImageFolder::new(&root, opts.image_size).map_err(|e| Error::DataSpec {
                            needs: format!(
                                "folder data needs {}/<class>/<image> (and the same for val)",
                                root.display()
                            ),
                            source: Box::new(e),
                        })
                    };
                    let (train, val) = (open("train")?, open("val")?);
                    if train.classes() != val.classes() {
                        return Err(Error::Dataset(format!(
                            "{}: train has classes {:?} but val has {:?}",
                            dir.display(),
                            train.classes(),
                            val.classes()
                        )));
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

fn cifar_needs(dir: &Path, source: Error) -> Error {
    Error::DataSpec {
        needs: format!(
            "cifar10:{} must hold the binary version (data_batch_1.bin … data_batch_5.bin, test_batch.bin)",
            dir.display()
        ),
        source: Box::new(source),
    }
}

impl Datasets {
    /// The training loader: shuffled and augmented with `seed`, normalised, two batches
    /// prepared ahead.
    pub fn train_loader(
        &self,
        batch_size: usize,
        seed: u64,
        device: &Device,
    ) -> Result<DataLoader> {
        let config = LoaderConfig {
            batch_size,
            shuffle: true,
            drop_last: false,
            augment: Some(self.augment),
            normalize: Some(self.normalize.clone()),
            seed,
            prefetch: 2,
        };
        DataLoader::new(self.train.clone(), config, device)
    }

    /// The validation loader: in order, normalised, not augmented.
    pub fn val_loader(&self, batch_size: usize, device: &Device) -> Result<DataLoader> {
        let config = LoaderConfig {
            batch_size,
            shuffle: false,
            normalize: Some(self.normalize.clone()),
            ..LoaderConfig::default()
        };
        DataLoader::new(self.val.clone(), config, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> DataOptions {
        DataOptions {
            train_size: 8,
            val_size: 4,
            image_size: 8,
            seed: 3,
        }
    }

    #[test]
    fn parses_and_prints_every_kind() {
        for (s, spec) in [
            ("synthetic", DataSpec::Synthetic),
            ("cifar10:/d", DataSpec::Cifar10("/d".into())),
            ("folder:a/b", DataSpec::Folder("a/b".into())),
        ] {
            assert_eq!(s.parse::<DataSpec>().unwrap(), spec);
            assert_eq!(spec.to_string(), s);
        }
        for bad in ["imagenet", "cifar10:", "folder", "synthetic:x", ""] {
            let e = bad.parse::<DataSpec>().unwrap_err();
            assert!(e.to_string().contains("expected `synthetic`"), "{bad}: {e}");
        }
    }

    #[test]
    fn synthetic_opens_both_splits_with_their_sizes() {
        let d = DataSpec::Synthetic.open(&opts()).unwrap();
        assert_eq!((d.train.len(), d.val.len()), (8, 4));
        assert_eq!(d.train.classes().len(), 10);
        assert_eq!(d.normalize, Normalize::cifar10());
        assert!(
            d.description.contains("8 train / 4 val"),
            "{}",
            d.description
        );
        let train = d.train_loader(4, 0, &Device::Cpu).unwrap();
        let val = d.val_loader(3, &Device::Cpu).unwrap();
        assert_eq!((train.len(), val.len()), (2, 2));
        let empty = DataOptions {
            val_size: 0,
            ..opts()
        };
        assert!(DataSpec::Synthetic.open(&empty).is_err());
    }

    #[test]
    fn missing_directories_say_what_they_need() {
        let e = DataSpec::Cifar10("/nonexistent".into())
            .open(&opts())
            .err()
            .unwrap();
        assert!(
            e.to_string()
                .contains("must hold the binary version (data_batch_1.bin"),
            "{e}"
        );
        assert!(std::error::Error::source(&e).is_some());
        let e = DataSpec::Folder("/nonexistent".into())
            .open(&opts())
            .err()
            .unwrap();
        assert!(
            e.to_string()
                .contains("folder data needs /nonexistent/train/<class>/<image>"),
            "{e}"
        );
    }

    #[test]
    fn folder_splits_must_have_the_same_classes() {
        let dir = tempfile::tempdir().unwrap();
        for (split, class) in [("train", "cat"), ("train", "dog"), ("val", "cat")] {
            let d = dir.path().join(split).join(class);
            std::fs::create_dir_all(&d).unwrap();
            image::RgbImage::new(4, 4).save(d.join("0.png")).unwrap();
        }
        let e = DataSpec::Folder(dir.path().into())
            .open(&opts())
            .err()
            .unwrap();
        assert!(e.to_string().contains("train has classes"), "{e}");
        let v = dir.path().join("val").join("dog");
        std::fs::create_dir_all(&v).unwrap();
        image::RgbImage::new(4, 4).save(v.join("0.png")).unwrap();
        let d = DataSpec::Folder(dir.path().into()).open(&opts()).unwrap();
        assert_eq!(d.train.classes(), ["cat", "dog"]);
        assert_eq!(d.normalize, Normalize::imagenet());
    }
}
