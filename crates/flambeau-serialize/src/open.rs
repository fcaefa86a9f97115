//! [`open`]: every file a user hands flambeau, by what it is rather than what it is called —
//! `torch.save` (zip or legacy), TorchScript, `.safetensors`, and Hugging Face–style sharded
//! checkpoints given by their index JSON, any shard, or the directory holding them.

use std::path::{Path, PathBuf};

use flambeau_core::{StateDict, Value};

use crate::sharded;
use crate::{load, Error, LoadConfig, Result};

/// What kind of file [`open_file`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// `torch.save` zip archive (PyTorch ≥ 1.6).
    TorchSave,
    /// The legacy pre-1.6 `torch.save` stream.
    TorchSaveLegacy,
    /// A TorchScript archive (`torch.jit.save`), read as `torch.jit.load(f).state_dict()`.
    TorchScript,
    /// A `.safetensors` file.
    Safetensors,
    /// A sharded checkpoint: its index file and how many shards it names.
    Sharded {
        /// The `*.index.json` file.
        index: PathBuf,
        /// The number of shard files.
        shards: usize,
    },
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Format::TorchSave => write!(f, "torch.save zip archive"),
            Format::TorchSaveLegacy => write!(f, "legacy torch.save stream (PyTorch < 1.6)"),
            Format::TorchScript => write!(
                f,
                "TorchScript archive (torch.jit.save); shown is its state dict, as torch.jit.load(f).state_dict() returns it"
            ),
            Format::Safetensors => write!(f, "safetensors"),
            Format::Sharded { index, shards } => {
                write!(f, "sharded checkpoint: {shards} shards named by {}", index.display())
            }
        }
    }
}

/// A file read by [`open_file`]: its contents and its format.
#[derive(Debug, Clone)]
pub struct Opened {
    /// The object in the file (for safetensors, sharded files and TorchScript: the state dict
    /// as an `OrderedDict` of tensors).
    pub value: Value,
    /// What the file was.
    pub format: Format,
}

fn is_safetensors(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "safetensors")
}

/// Opens `path`, whatever flambeau can read there (see the module documentation).
pub fn open(path: impl AsRef<Path>, config: &LoadConfig) -> Result<Value> {
    Ok(open_file(path, config)?.value)
}

/// [`open`], also saying what the file was.
pub fn open_file(path: impl AsRef<Path>, config: &LoadConfig) -> Result<Opened> {
    let path = path.as_ref();
    if let Some(index) = sharded::index_for(path)? {
        let (sd, shards) = sharded::load(&index, config)?;
        return Ok(Opened {
            value: sd.to_value(),
            format: Format::Sharded { index, shards },
        });
    }
    if path.is_dir() {
        for name in ["model.safetensors", "pytorch_model.bin"] {
            if path.join(name).is_file() {
                return open_file(path.join(name), config);
            }
        }
        return Err(Error::NoCheckpointInDirectory(path.to_path_buf()));
    }
    open_one(path, config)
}

/// Opens one file that is not a sharded checkpoint (a shard itself, for instance).
pub(crate) fn open_one(path: &Path, config: &LoadConfig) -> Result<Opened> {
    if is_safetensors(path) {
        let sd = crate::safetensors::load(path, &config.device)?;
        return Ok(Opened {
            value: sd.to_value(),
            format: Format::Safetensors,
        });
    }
    let format = sniff(path)?;
    Ok(Opened {
        value: load(path, config)?,
        format,
    })
}

/// The torch.save flavour of a file, from its first bytes and (for zips) its records.
fn sniff(path: &Path) -> Result<Format> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: read-only map, dropped before returning (as in `load`).
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    Ok(if crate::load::is_torchscript(&map) {
        Format::TorchScript
    } else if map.starts_with(b"PK\x03\x04") {
        Format::TorchSave
    } else {
        Format::TorchSaveLegacy
    })
}

/// Reads the state dict of any file [`open`] reads.
pub fn open_state_dict(path: impl AsRef<Path>, config: &LoadConfig) -> Result<StateDict> {
    crate::load_state_dict_file(path, config)
}
