//! # flambeau
//!
//! PyTorch-compatible deep learning on [Candle](https://github.com/huggingface/candle):
//! PyTorch-named parameters, `state_dict` / `load_state_dict` with PyTorch's own error wording
//! plus a diagnosis, and (in the sibling crates) real `.pth` files, optimizers and ResNets.
//!
//! This facade re-exports the workspace crates so that users depend on one package.

pub use flambeau_core as core;
pub use flambeau_core::*;
pub use flambeau_serialize as serialize;
pub use flambeau_serialize::{
    load, load_state_dict_file, save, save_state_dict, Checkpoint, CheckpointManager, LoadConfig,
};
pub use flambeau_vision as vision;
