//! The error type of flambeau-core: one [`Error`](enum@Error) for names, state dicts,
//! `load_state_dict`, and the layers and optimizers built on them.

use candle_core::DType;
use thiserror::Error;

use crate::load::IncompatibleKeys;

/// Everything that can go wrong in flambeau-core, `load_state_dict` included, and in the layers
/// and optimizers built on it (flambeau-nn, flambeau-optim), so that `?` works across them.
///
/// The variants a caller can act on are typed: [`Incompatible`](Error::Incompatible) carries the
/// key report of a refused `load_state_dict` (also reachable with [`Error::incompatible`]),
/// [`InvalidArgument`](Error::InvalidArgument) names the constructor argument PyTorch would
/// refuse, [`InvalidState`](Error::InvalidState) says which saved state could not be read.
/// Payloads are boxed or kept small so that the type stays at most 64 bytes.
#[derive(Debug, Error)]
pub enum Error {
    /// An error from Candle itself (shape errors, device errors, …); boxed, as candle's error is
    /// larger than every other variant (`?` converts a bare `candle_core::Error`).
    #[error(transparent)]
    Candle(Box<candle_core::Error>),

    /// A parameter or buffer was registered twice under the same name.
    #[error("duplicate name `{name}`: a parameter or buffer with this name is already registered")]
    DuplicateName {
        /// The full dotted name.
        name: String,
    },

    /// A name was looked up that the store does not have.
    #[error("no parameter or buffer named `{name}`")]
    UnknownName {
        /// The full dotted name.
        name: String,
    },

    /// A path segment or local name that PyTorch could not produce (empty or containing `.`).
    #[error("invalid name segment `{segment}`: names must be non-empty and contain no `.`")]
    InvalidName {
        /// The offending segment.
        segment: String,
    },

    /// A regular expression given to a key rule did not compile.
    #[error("invalid regular expression `{pattern}`: {source}")]
    Regex {
        /// The pattern as given.
        pattern: String,
        /// What the regex engine said.
        #[source]
        source: regex::Error,
    },

    /// A value had another type than the one needed (e.g. a `Value` that is not a dict of tensors).
    #[error("{0}")]
    Type(String),

    /// A key rule mapped two or more keys onto one; applying it would keep one tensor and
    /// silently drop the others.
    #[error("{rule} maps several keys onto one, which would drop tensors: {}; drop the unwanted keys first (KeyRule::drop) or make the rule more specific", describe_collisions(.collisions))]
    KeyCollision {
        /// The rule, as the Rust expression that builds it.
        rule: String,
        /// Each resulting key with the original keys that map onto it.
        collisions: Vec<(String, Vec<String>)>,
    },

    /// A weight or buffer holds NaN or infinity (see [`StateDict::check_finite`](crate::StateDict::check_finite)).
    #[error("{0}: the model diverged or a layer saw bad input (e.g. a batch norm trained on one value per channel); lower the learning rate or check the data, and resume from the last finite checkpoint")]
    NonFinite(Box<crate::finite::NonFinite>),

    /// `load_state_dict` refused: missing/unexpected keys (strict) or shape mismatches.
    /// `Display` is PyTorch's `RuntimeError` text word for word, followed by the diagnosis.
    #[error("{0}")]
    Incompatible(Box<IncompatibleKeys>),

    /// `load_state_dict`: `cast_dtype` is off and a dtype differs.
    #[error("dtype mismatch for {key}: the checkpoint has {from:?}, the model {to:?} (enable LoadOptions::cast_dtype to cast as copy_ does)")]
    Dtype {
        /// The model's key.
        key: String,
        /// dtype in the checkpoint.
        from: DType,
        /// dtype in the model.
        to: DType,
    },

    /// `load_state_dict`: the checkpoint's tensor has a dtype or layout no model tensor can take
    /// (complex, float8_e5m2, uint64, quantized, sparse).
    #[error("while copying the parameter named \"{key}\", the checkpoint's tensor is {}, which flambeau cannot load into a model. Dequantize, densify or cast it in PyTorch first (e.g. `sd[\"{key}\"] = sd[\"{key}\"].dequantize()` / `.to_dense()` / `.float()`), or drop it with KeyRule::drop", .tensor)]
    UnsupportedTensor {
        /// The model's key.
        key: String,
        /// What the checkpoint's tensor is.
        tensor: Box<TensorKind>,
    },

    /// A parameter or buffer of a dtype its device cannot hold: candle's CUDA backend has no
    /// copy or cast kernels for i16 and i32 (nor any for the sub-byte floats), see
    /// [`crate::device_dtypes`].
    #[error("`{name}`: a {dtype:?} tensor cannot live on {device}: candle's CUDA backend has no copy or cast kernels for i16/i32 (nor any for F6E2M3/F6E3M2/F4/F8E8M0); make it i64 (or a float dtype), or keep it on the CPU")]
    DeviceDtype {
        /// The parameter's or buffer's name.
        name: String,
        /// Its dtype.
        dtype: DType,
        /// The device (`Cuda { gpu_id: 0 }`).
        device: String,
    },

    /// `load_state_dict`: casting or moving a checkpoint tensor to the model's dtype or device
    /// failed.
    #[error("while copying the parameter named \"{key}\": {source}")]
    Copy {
        /// The model's key.
        key: String,
        /// What candle said (boxed: candle's error is large).
        #[source]
        source: Box<candle_core::Error>,
    },

    /// An argument PyTorch's constructor (or function) would refuse with a `ValueError`, such as
    /// `Invalid learning rate: -1.0`; `Display` is PyTorch's text, plus what is expected.
    #[error("{message}")]
    InvalidArgument {
        /// The argument's (or option's) name, as in PyTorch: `lr`, `betas`, `total_steps`, `groups`.
        name: String,
        /// What is wrong, in PyTorch's words where PyTorch has them.
        message: String,
    },

    /// A saved optimizer or scheduler state (a state dict) that cannot be read, or that does not
    /// fit the optimizer or scheduler it is loaded into.
    #[error("{message}")]
    InvalidState {
        /// Whose state: `optimizer` or `scheduler`.
        what: &'static str,
        /// What is wrong or missing.
        message: String,
    },

    /// A scheduler was stepped past the number of steps it was built for (PyTorch's OneCycleLR).
    #[error("Tried to step {step} times. The specified number of total steps is {total_steps}")]
    StepsExhausted {
        /// The step that was asked for.
        step: i64,
        /// The steps the scheduler was built for.
        total_steps: i64,
    },
}

/// What a checkpoint tensor that no model tensor can take is (see
/// [`Error::UnsupportedTensor`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorKind {
    /// PyTorch's dtype name (`qint8`, `complex64`).
    pub dtype: String,
    /// The layout (`strided`, `quantized`, `sparse_coo`).
    pub layout: String,
}

impl std::fmt::Display for TensorKind {
    /// `qint8 (quantized)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.dtype, self.layout)
    }
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::Candle(Box::new(e))
    }
}

impl Error {
    /// The key report of a refused `load_state_dict` (missing/unexpected keys, shape
    /// mismatches, the diagnosis); `None` for any other error.
    pub fn incompatible(&self) -> Option<&IncompatibleKeys> {
        match self {
            Error::Incompatible(k) => Some(k),
            _ => None,
        }
    }

    /// An [`InvalidArgument`](Error::InvalidArgument) error.
    pub fn invalid_argument(name: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidArgument {
            name: name.into(),
            message: message.into(),
        }
    }

    /// An [`InvalidState`](Error::InvalidState) error.
    pub fn invalid_state(what: &'static str, message: impl Into<String>) -> Self {
        Error::InvalidState {
            what,
            message: message.into(),
        }
    }
}

/// `` `module.w`, `w` → `w` `` for the first few collisions, and how many more there are.
fn describe_collisions(collisions: &[(String, Vec<String>)]) -> String {
    const SHOWN: usize = 5;
    let mut parts: Vec<String> = collisions
        .iter()
        .take(SHOWN)
        .map(|(to, from)| {
            let from: Vec<String> = from.iter().map(|k| format!("`{k}`")).collect();
            format!("{} → `{to}`", from.join(", "))
        })
        .collect();
    if collisions.len() > SHOWN {
        parts.push(format!("and {} more", collisions.len() - SHOWN));
    }
    parts.join("; ")
}

/// `Result` with flambeau-core's [`Error`](enum@Error).
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::Error;

    /// Every `Result` of flambeau-core carries this type: large payloads are boxed so that it
    /// stays well under clippy's `result_large_err` threshold (128 bytes).
    #[test]
    fn error_stays_small() {
        let size = std::mem::size_of::<Error>();
        assert!(size <= 56, "flambeau_core::Error is {size} bytes");
    }
}
