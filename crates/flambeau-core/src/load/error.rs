//! [`LoadError`]: why `load_state_dict` refused, in PyTorch's words plus the diagnosis.

use std::fmt;

use candle_core::DType;
use thiserror::Error;

use super::diagnosis::Diagnosis;
use super::shape_mismatch::ShapeMismatch;

/// Keys that did not match; `Display` is PyTorch's `RuntimeError` text word for word, followed
/// by flambeau's diagnosis.
#[derive(Debug, Clone)]
pub struct IncompatibleKeys {
    /// The model's class name (`ResNet`).
    pub model_name: String,
    /// Whether missing/unexpected keys count as errors (strict mode).
    pub strict: bool,
    /// Model keys the checkpoint lacks.
    pub missing_keys: Vec<String>,
    /// Checkpoint keys the model lacks.
    pub unexpected_keys: Vec<String>,
    /// Shapes that differ.
    pub shape_mismatches: Vec<ShapeMismatch>,
    /// Likely causes and fixes.
    pub diagnosis: Vec<Diagnosis>,
}

fn quoted(keys: &[String]) -> String {
    keys.iter()
        .map(|k| format!("\"{k}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

impl IncompatibleKeys {
    /// Exactly the text of PyTorch's `RuntimeError`, without flambeau's diagnosis.
    pub fn pytorch_message(&self) -> String {
        let mut msgs = Vec::new();
        if self.strict && !self.missing_keys.is_empty() {
            msgs.push(format!(
                "Missing key(s) in state_dict: {}. ",
                quoted(&self.missing_keys)
            ));
        }
        if self.strict && !self.unexpected_keys.is_empty() {
            msgs.push(format!(
                "Unexpected key(s) in state_dict: {}. ",
                quoted(&self.unexpected_keys)
            ));
        }
        msgs.extend(self.shape_mismatches.iter().map(ToString::to_string));
        format!(
            "Error(s) in loading state_dict for {}:\n\t{}",
            self.model_name,
            msgs.join("\n\t")
        )
    }
}

impl fmt::Display for IncompatibleKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.pytorch_message())?;
        if !self.diagnosis.is_empty() {
            write!(f, "\n\nflambeau diagnosis:")?;
            for d in &self.diagnosis {
                write!(f, "\n  - {d}")?;
            }
        }
        Ok(())
    }
}

/// Why `load_state_dict` changed nothing.
#[derive(Debug, Error)]
pub enum LoadError {
    /// Missing/unexpected keys (strict) or shape mismatches.
    #[error("{0}")]
    Incompatible(Box<IncompatibleKeys>),

    /// A key rule could not be applied (a bad regular expression).
    #[error("key rule failed: {0}")]
    KeyRule(#[source] crate::Error),

    /// `cast_dtype` is off and a dtype differs.
    #[error("dtype mismatch for {key}: the checkpoint has {from:?}, the model {to:?} (enable LoadOptions::cast_dtype to cast as copy_ does)")]
    Dtype {
        /// The model's key.
        key: String,
        /// dtype in the checkpoint.
        from: DType,
        /// dtype in the model.
        to: DType,
    },

    /// The checkpoint's tensor has a dtype or layout no model tensor can take (complex,
    /// float8_e5m2, uint64, quantized, sparse).
    #[error("while copying the parameter named \"{key}\", the checkpoint's tensor is {dtype} ({layout}), which flambeau cannot load into a model. Dequantize, densify or cast it in PyTorch first (e.g. `sd[\"{key}\"] = sd[\"{key}\"].dequantize()` / `.to_dense()` / `.float()`), or drop it with KeyRule::drop")]
    UnsupportedTensor {
        /// The model's key.
        key: String,
        /// PyTorch's dtype name (`qint8`, `complex64`).
        dtype: String,
        /// The layout (`strided`, `quantized`, `sparse_coo`).
        layout: String,
    },

    /// Casting or moving a tensor failed.
    #[error("while copying the parameter named \"{key}\": {source}")]
    Copy {
        /// The model's key.
        key: String,
        /// What candle said.
        #[source]
        source: candle_core::Error,
    },
}

impl LoadError {
    /// The key report, when the error is about keys or shapes.
    pub fn incompatible(&self) -> Option<&IncompatibleKeys> {
        match self {
            LoadError::Incompatible(k) => Some(k),
            _ => None,
        }
    }
}
