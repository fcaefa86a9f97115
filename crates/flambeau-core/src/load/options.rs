//! [`LoadOptions`]: how `load_state_dict` matches a checkpoint against a model.

use crate::keys::KeyRule;

/// Options of [`VarStore::load_state_dict`](crate::VarStore::load_state_dict).
///
/// The default is PyTorch's: strict, no key surgery, a size mismatch is an error, and tensors are
/// cast to the model's dtype as `Tensor.copy_` does.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Missing or unexpected keys are an error (PyTorch's `strict=True`).
    pub strict: bool,
    /// Key rules applied to the checkpoint's keys, in order, before matching.
    pub key_rules: Vec<KeyRule>,
    /// Skip (and report) keys whose shape differs instead of failing: fine-tuning with a new head.
    pub skip_shape_mismatch: bool,
    /// Cast checkpoint tensors to the model's dtype (f16/bf16/f64 into f32), as `copy_` does.
    /// When off, a dtype difference is an error.
    pub cast_dtype: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            strict: true,
            key_rules: Vec::new(),
            skip_shape_mismatch: false,
            cast_dtype: true,
        }
    }
}

impl LoadOptions {
    /// Sets `strict`.
    pub fn strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    /// Appends a key rule.
    pub fn rule(mut self, rule: KeyRule) -> Self {
        self.key_rules.push(rule);
        self
    }

    /// Sets `skip_shape_mismatch`.
    pub fn skip_shape_mismatch(mut self, skip: bool) -> Self {
        self.skip_shape_mismatch = skip;
        self
    }

    /// Sets `cast_dtype`.
    pub fn cast_dtype(mut self, cast: bool) -> Self {
        self.cast_dtype = cast;
        self
    }
}
