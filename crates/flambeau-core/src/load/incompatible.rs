//! [`IncompatibleKeys`]: why `load_state_dict` refused, in PyTorch's words plus the diagnosis
//! (carried by [`Error::Incompatible`](crate::Error::Incompatible)).

use std::fmt;

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
