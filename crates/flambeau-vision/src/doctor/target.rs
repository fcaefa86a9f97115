//! [`Target`]: what `flambeau doctor` loads a checkpoint into — a built architecture, or the
//! keys and shapes of another checkpoint.

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use flambeau_core::{StateDict, Value, VarStore};
use flambeau_serialize::{find_state_dict, LoadConfig};

use crate::models::{ResNet, ResNetConfig};
use crate::{Error, Result};

/// torchvision's default class count (`resnet50()` without `num_classes`).
pub const DEFAULT_NUM_CLASSES: usize = 1000;

/// The model a checkpoint is checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A torchvision architecture by name (`resnet50`), with its class count (torchvision's
    /// default, 1000, when `None`).
    Arch {
        /// torchvision's function name.
        name: String,
        /// `num_classes`.
        num_classes: Option<usize>,
    },
    /// The keys and shapes of another checkpoint (one that loads, typically).
    Reference(PathBuf),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Arch { name, num_classes } => write!(
                f,
                "{name}(num_classes={})",
                num_classes.unwrap_or(DEFAULT_NUM_CLASSES)
            ),
            Target::Reference(p) => write!(f, "the keys of {}", p.display()),
        }
    }
}

impl Target {
    /// The model as a store of named tensors, ready for `load_state_dict` (on the CPU).
    pub fn build(&self) -> Result<VarStore> {
        match self {
            Target::Arch { name, num_classes } => {
                let config =
                    ResNetConfig::by_name(name, num_classes.unwrap_or(DEFAULT_NUM_CLASSES))?;
                let vs = VarStore::new(&Device::Cpu, DType::F32);
                ResNet::new(vs.root(), config)?;
                Ok(vs)
            }
            Target::Reference(path) => {
                let value =
                    flambeau_serialize::open(path, &LoadConfig::default()).map_err(|source| {
                        Error::Checkpoint {
                            path: path.clone(),
                            source: Box::new(source),
                        }
                    })?;
                let found = find_state_dict(&value).map_err(|source| Error::Checkpoint {
                    path: path.clone(),
                    source: Box::new(source),
                })?;
                let name = match &value {
                    Value::Object(o) => o.class.rsplit('.').next().unwrap_or("Module").to_string(),
                    _ if ResNetConfig::architecture(&found.state_dict).is_some() => {
                        "ResNet".to_string()
                    }
                    _ => "Module".to_string(),
                };
                store_like(&found.state_dict, &name)
            }
        }
    }
}

/// A store with one persistent buffer per entry of `sd`, under the same module tree, so that
/// loading into it follows PyTorch's rules for a model with exactly these keys and shapes.
fn store_like(sd: &StateDict, name: &str) -> Result<VarStore> {
    let vs = VarStore::new(&Device::Cpu, DType::F32);
    vs.set_model_name(name);
    for (key, value) in sd.iter_values() {
        let tensor = match value {
            Value::Tensor(t) => t,
            // A dtype candle lacks: a stand-in of its shape (only keys and shapes matter here).
            Value::RawTensor(r) => Tensor::zeros(r.size.clone(), DType::U8, &Device::Cpu)?,
            _ => continue,
        };
        let mut vb = vs.root();
        let mut segments: Vec<&str> = key.split('.').collect();
        let leaf = segments.pop().unwrap_or(key);
        for s in segments {
            vb = vb.pp(s);
        }
        vb.buffer(leaf, tensor, true)?;
    }
    Ok(vs)
}
