//! # flambeau-core
//!
//! The heart of flambeau: a [`VarStore`] whose parameters and buffers carry the dotted names
//! PyTorch gives them (`layer1.0.downsample.1.running_var`), a [`VarBuilder`] that builds those
//! names, [`StateDict`] with the key tools users otherwise hand-write, and
//! `load_state_dict` that answers with PyTorch's own wording plus the cause and the fix.
//!
//! Layers live in `flambeau-nn`, optimizers in `flambeau-optim`, kernels in `flambeau-kernels`;
//! this crate knows only names and state.
//!
//! Trainable tensors are [`candle_core::Var`]s kept in a [`candle_nn::VarMap`], so plain
//! candle-nn code (and candle-nn optimizers) can train a flambeau model unchanged.

pub mod device_dtypes;
pub mod diff;
pub mod error;
pub mod finite;
pub mod init;
pub mod keys;
pub mod load;
pub mod raw_tensor;
pub mod state_dict;
pub mod value;
pub mod var_store;

pub use error::{Error, Result, TensorKind};
pub use finite::NonFinite;
pub use init::{FanMode, Init, Nonlinearity};
pub use keys::KeyRule;
pub use load::{IncompatibleKeys, LoadOptions, LoadReport};
pub use raw_tensor::{Quantizer, RawData, RawStorage, RawStrided, RawTensor};
pub use state_dict::StateDict;
pub use value::{Dict, DictKind, Object, Value};
pub use var_store::{ModuleInfo, VarBuilder, VarStore};
