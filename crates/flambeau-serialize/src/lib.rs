//! # flambeau-serialize
//!
//! Real PyTorch checkpoint files, both ways:
//! - [`load`] reads `torch.save` output — the zip format (PyTorch ≥ 1.6) and the legacy
//!   pre-1.6 stream — into a [`Value`] tree, building every tensor on the device you ask for
//!   (PyTorch's `map_location`), through a pickle VM that executes nothing: unknown classes become
//!   inert [`Value::Object`]s, so files `torch.load(weights_only=True)` refuses still open.
//! - [`save`] writes the zip format that `torch.load(path)` opens with its defaults, atomically.
//! - [`load_state_dict_file`] / [`find_state_dict`] dig the model's state dict out of the layouts
//!   people use (bare, `state_dict`, `model_state_dict`, `model`, DataParallel, whole pickled
//!   `nn.Module`).
//! - [`Checkpoint`] / [`CheckpointManager`]: `<model, optimizer, scheduler, epoch, …>` training
//!   checkpoints in the PyTorch tutorial's layout (other layouts read too), kept crash-safely.
//! - [`safetensors`] reads and writes `.safetensors`.
//! - [`open`] reads any of these by what the file is: `torch.save` zip or legacy (records
//!   re-zipped with deflate included), TorchScript archives (as their state dict),
//!   `.safetensors`, and [`sharded`] checkpoints (index JSON, any shard, or their directory).
//! - [`convert`] writes a checkpoint again (`.pth`, `.safetensors`, shards) with key rules and a
//!   cast on the way.
//! - [`diff`] compares the state dicts of two files, as text or JSON.
//! - [`inspect`] describes a file for people: its layout, tensors, statistics and object tree.
//! - Tensors of dtypes or layouts candle lacks (int8, bool, uint16/64, complex, float8_e5m2,
//!   quantized, sparse) read as [`RawTensor`]s and are written back byte for byte.

mod archive;
pub mod checkpoint;
pub mod convert;
mod devices;
pub mod diff;
mod error;
mod files;
mod find;
pub mod inspect;
mod load;
mod open;
mod pickle;
pub mod safetensors;
pub mod sanitize;
mod save;
pub mod sharded;
mod storage;
mod torchscript;

pub use checkpoint::{Checkpoint, CheckpointManager, Layout};
pub use devices::{storage_locations, storage_locations_bytes};
pub use error::{Error, Result};
pub use find::{find_state_dict, state_dict_from_module, FoundStateDict};
pub use load::{is_torchscript, load, load_bytes, load_state_dict_file, LoadConfig};
pub use open::{open, open_file, open_state_dict, Format, Opened};
pub use save::{save, save_state_dict, to_bytes, write_to};

pub use flambeau_core::{Dict, DictKind, Object, RawTensor, StateDict, Value};
