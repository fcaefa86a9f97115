//! # flambeau
//!
//! PyTorch-compatible deep learning on [Candle](https://github.com/huggingface/candle):
//! PyTorch-named parameters, `state_dict` / `load_state_dict` with PyTorch's own error wording
//! plus a diagnosis, real `.pth` files, layers, optimizers, ResNets and a resumable training loop.
//!
//! This facade re-exports each workspace crate as a module, so that users depend on one package:
//!
//! | module | crate | what |
//! | --- | --- | --- |
//! | [`core`] | flambeau-core | `VarStore`, `StateDict`, key rules, `load_state_dict` + diagnosis |
//! | [`kernels`] | flambeau-kernels | the custom ops, and `runtime` settings for training loops |
//! | [`nn`] | flambeau-nn | layers and losses |
//! | [`optim`] | flambeau-optim | SGD / Adam / AdamW, LR schedulers, clipping |
//! | [`serialize`] | flambeau-serialize | `.pth` / safetensors reading and writing, `Checkpoint` |
//! | [`vision`] | flambeau-vision | torchvision ResNets, datasets, the resumable data loader |
//! | [`parallel`] | flambeau-parallel | scatter / replicate / gather, `DataParallel`, `ReplicaGroup` |
//! | [`train`] | flambeau-train | the training loop: `Trainer` fit / evaluate / resume, metrics |
//!
//! The types almost every program names are also at the top level, and [`Error`] takes every
//! crate's error through `From`, so `?` works across all of them.

pub use flambeau_core as core;
pub use flambeau_kernels as kernels;
pub use flambeau_nn as nn;
pub use flambeau_optim as optim;
pub use flambeau_parallel as parallel;
pub use flambeau_serialize as serialize;
pub use flambeau_train as train;
pub use flambeau_vision as vision;

pub use flambeau_core::{KeyRule, LoadOptions, LoadReport, StateDict, Value, VarBuilder, VarStore};
pub use flambeau_serialize::{Checkpoint, CheckpointManager, LoadConfig};

mod error;
pub use error::{Error, Result};

/// The training guide (`docs/src/training.md`), whose Rust snippets are compiled as doc tests so
/// that the documentation cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../docs/src/training.md")]
pub struct TrainingGuide;
