//! [`ResNetCheckpoint`]: any file that holds a ResNet's weights, opened the same way for eval,
//! fine-tuning and resuming — `.pth` (zip or legacy), `.safetensors`, DataParallel or
//! `torch.compile` wrappers, bare state dicts and whole training checkpoints alike.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use flambeau_core::{LoadOptions, LoadReport, Value, VarStore};
use flambeau_serialize::{Checkpoint, LoadConfig};

use super::infer::{num_classes, ARCHITECTURES};
use super::resnet::{ResNet, ResNetConfig};
use crate::{Error, Result};

/// A checkpoint opened for a ResNet.
#[derive(Debug, Clone)]
pub struct ResNetCheckpoint {
    /// The file it was read from.
    pub path: PathBuf,
    /// Everything the file holds; `checkpoint.model` has its wrapper prefixes stripped.
    pub checkpoint: Checkpoint,
    /// The architecture: the file's `arch` entry (flambeau's runs and torchvision's reference
    /// scripts store one), else recognised from the keys; `None` when neither tells.
    pub arch: Option<String>,
    /// Output classes of its classifier (`fc.weight`'s rows); `None` without one (e.g. a
    /// backbone saved for feature extraction, which can still initialise a model).
    pub num_classes: Option<usize>,
}

impl ResNetCheckpoint {
    /// Reads `path` onto `device` and recognises the ResNet in it.
    pub fn open(path: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let config = LoadConfig {
            device: device.clone(),
        };
        let mut checkpoint =
            Checkpoint::load(&path, &config).map_err(|source| Error::Checkpoint {
                path: path.clone(),
                source: Box::new(source),
            })?;
        checkpoint.model = checkpoint.model.strip_wrappers();
        let num_classes = num_classes(&checkpoint.model).ok();
        let stored = checkpoint.extra.get("arch").and_then(Value::as_str);
        let arch = stored
            .or_else(|| ResNetConfig::architecture(&checkpoint.model))
            .map(str::to_string);
        Ok(Self {
            path,
            checkpoint,
            arch,
            num_classes,
        })
    }

    /// The configuration of the checkpoint's architecture and class count.
    pub fn config(&self) -> Result<ResNetConfig> {
        let Some(arch) = &self.arch else {
            return Err(Error::NotAResNet {
                path: self.path.clone(),
                reason: format!(
                    "cannot tell which ResNet it holds; name the architecture ({})",
                    ARCHITECTURES.join(", ")
                ),
            });
        };
        let num_classes = self.classes()?;
        ResNetConfig::by_name(arch, num_classes)
    }

    /// The classifier's output classes, or an error saying the file has no `fc.weight`.
    pub fn classes(&self) -> Result<usize> {
        self.num_classes.ok_or_else(|| Error::NotAResNet {
            path: self.path.clone(),
            reason: "the checkpoint has no `fc.weight`: is it a torchvision ResNet?".into(),
        })
    }

    /// Loads the weights into `vs` strictly (every key and shape must match), as PyTorch's
    /// `model.load_state_dict(sd)` does.
    pub fn load_into(&self, vs: &VarStore) -> Result<LoadReport> {
        self.load_with(vs, &LoadOptions::default())
    }

    /// Fine-tuning: loads every tensor whose name and shape match and reports the rest, so that
    /// a model with another classifier (a new head) starts from the file's backbone.
    pub fn init_into(&self, vs: &VarStore) -> Result<LoadReport> {
        let opts = LoadOptions::default()
            .strict(false)
            .skip_shape_mismatch(true);
        self.load_with(vs, &opts)
    }

    fn load_with(&self, vs: &VarStore, opts: &LoadOptions) -> Result<LoadReport> {
        vs.load_state_dict(&self.checkpoint.model, opts)
            .map_err(|source| Error::Load {
                path: self.path.clone(),
                source: Box::new(source),
            })
    }

    /// A ResNet of the checkpoint's architecture and class count, with its weights (f32, on
    /// the device the file was opened onto).
    pub fn build(&self, device: &Device) -> Result<(VarStore, ResNet)> {
        let vs = VarStore::new(device, DType::F32);
        let model = ResNet::new(vs.root(), self.config()?)?;
        self.load_into(&vs)?;
        Ok((vs, model))
    }
}

impl ResNet {
    /// Opens any file holding a torchvision ResNet (see [`ResNetCheckpoint`]) and returns the
    /// model with its weights, and the store that owns them (for an optimizer or for saving).
    ///
    /// ```no_run
    /// use flambeau_vision::models::ResNet;
    /// # fn main() -> flambeau_vision::Result<()> {
    /// let (vs, model) = ResNet::from_checkpoint("resnet18.pth", &candle_core::Device::Cpu)?;
    /// println!("{} classes", model.config().num_classes);
    /// # Ok(()) }
    /// ```
    pub fn from_checkpoint(path: impl AsRef<Path>, device: &Device) -> Result<(VarStore, Self)> {
        ResNetCheckpoint::open(path, device)?.build(device)
    }
}
