//! [`ShapeMismatch`]: one key whose shapes differ, shared by the report, the error and the
//! diagnosis (its own file so that none of them imports another for it).

use std::fmt;

/// A key whose tensor has another shape in the checkpoint than in the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeMismatch {
    /// The model's key.
    pub key: String,
    /// Shape in the checkpoint.
    pub checkpoint: Vec<usize>,
    /// Shape in the model.
    pub model: Vec<usize>,
}

impl fmt::Display for ShapeMismatch {
    /// PyTorch's line, word for word.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "size mismatch for {}: copying a param with shape {} from checkpoint, the shape in current model is {}.",
            self.key,
            torch_size(&self.checkpoint),
            torch_size(&self.model)
        )
    }
}

/// `torch.Size([100, 512])`.
pub fn torch_size(dims: &[usize]) -> String {
    let inner: Vec<String> = dims.iter().map(usize::to_string).collect();
    format!("torch.Size([{}])", inner.join(", "))
}
