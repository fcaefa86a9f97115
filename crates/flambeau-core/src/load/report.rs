//! [`LoadReport`]: what `load_state_dict` did.

use std::fmt;

use candle_core::DType;

use super::diagnosis::Diagnosis;
use super::shape_mismatch::ShapeMismatch;

/// A tensor that was cast on the way in, as `copy_` casts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DtypeCast {
    /// The model's key.
    pub key: String,
    /// dtype in the checkpoint.
    pub from: DType,
    /// dtype in the model.
    pub to: DType,
}

/// The outcome of a successful `load_state_dict`.
///
/// `Display` prints like PyTorch's `_IncompatibleKeys`; the other fields say what else happened.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Model keys that received a value.
    pub loaded: Vec<String>,
    /// Model keys the checkpoint did not have (only non-empty for non-strict loads).
    pub missing_keys: Vec<String>,
    /// Checkpoint keys the model does not have (only non-empty for non-strict loads).
    pub unexpected_keys: Vec<String>,
    /// Keys skipped because of `skip_shape_mismatch`.
    pub skipped_shape_mismatches: Vec<ShapeMismatch>,
    /// Tensors cast to the model's dtype.
    pub dtype_casts: Vec<DtypeCast>,
    /// `num_batches_tracked` counters a pre-1.2 BatchNorm checkpoint lacked; they keep the
    /// model's value, as PyTorch does.
    pub filled: Vec<String>,
    /// Likely causes and fixes for whatever did not match.
    pub diagnosis: Vec<Diagnosis>,
}

impl LoadReport {
    /// True when every key matched (PyTorch's `<All keys matched successfully>`).
    pub fn all_matched(&self) -> bool {
        self.missing_keys.is_empty() && self.unexpected_keys.is_empty()
    }
}

/// Python's `repr` of a list of strings: `['a', 'b']`.
fn py_list(items: &[String]) -> String {
    let inner: Vec<String> = items.iter().map(|s| py_str(s)).collect();
    format!("[{}]", inner.join(", "))
}

/// Python's `repr` of a str (single quotes unless the text holds one and no double quote).
fn py_str(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c)
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.all_matched() {
            write!(f, "<All keys matched successfully>")
        } else {
            write!(
                f,
                "_IncompatibleKeys(missing_keys={}, unexpected_keys={})",
                py_list(&self.missing_keys),
                py_list(&self.unexpected_keys)
            )
        }
    }
}
