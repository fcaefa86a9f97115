//! Key tools for [`StateDict`]: the prefix surgery and renames users otherwise hand-write, as
//! methods and as composable [`KeyRule`] values that `LoadOptions` applies before matching.

use candle_core::{DType, Device};
use regex::Regex;

use crate::{Error, Result, StateDict, Value};

/// Prefixes PyTorch's wrappers put in front of every key of the model they wrap.
pub const WRAPPER_PREFIXES: [&str; 2] = ["module.", "_orig_mod."];

fn compile(pattern: &str) -> Result<Regex> {
    Regex::new(pattern).map_err(|source| Error::Regex {
        pattern: pattern.to_string(),
        source,
    })
}

impl StateDict {
    /// Builds a new state dict by mapping every key (`None` drops it); metadata prefixes are
    /// mapped the same way so module versions follow their keys. Two keys mapped onto one are
    /// an [`Error::KeyCollision`] naming them (`rule` says which rule, for the message): keeping
    /// one tensor would silently drop the others.
    fn map_keys(
        &self,
        rule: impl FnOnce() -> KeyRule,
        mut f: impl FnMut(&str) -> Option<String>,
    ) -> Result<StateDict> {
        let mut out = StateDict::new();
        // New key → the original keys mapped onto it, for the ones that collide.
        let mut sources: indexmap::IndexMap<String, Vec<String>> = indexmap::IndexMap::new();
        // Raw entries (dtypes candle lacks) move with their keys like every other tensor.
        for (k, v) in self.iter_values() {
            if let Some(new) = f(k) {
                sources.entry(new.clone()).or_default().push(k.to_string());
                out.insert_value(new, v);
            }
        }
        let collisions: Vec<(String, Vec<String>)> = sources
            .into_iter()
            .filter(|(_, from)| from.len() > 1)
            .collect();
        if !collisions.is_empty() {
            return Err(Error::KeyCollision {
                rule: rule().to_string(),
                collisions,
            });
        }
        if let Some(meta) = self.metadata() {
            // Metadata prefixes have no trailing dot; map them as the key `prefix.` would be.
            let mapped = meta
                .iter()
                .filter_map(|(p, v)| {
                    let probe = if p.is_empty() {
                        String::new()
                    } else {
                        format!("{p}.")
                    };
                    let m = f(&probe)?;
                    Some((m.trim_end_matches('.').to_string(), *v))
                })
                .collect();
            out.set_metadata(mapped);
        }
        Ok(out)
    }

    /// Removes `prefix` from every key that has it (others are kept as they are), like PyTorch's
    /// `consume_prefix_in_state_dict_if_present(sd, "module.")`. A dict holding both
    /// `module.w` and `w` is an [`Error::KeyCollision`] (PyTorch would keep one silently).
    pub fn strip_prefix(&self, prefix: &str) -> Result<StateDict> {
        self.map_keys(
            || KeyRule::strip_prefix(prefix),
            |k| Some(k.strip_prefix(prefix).unwrap_or(k).to_string()),
        )
    }

    /// The wrapper prefixes every key carries, outermost first: DataParallel's and
    /// DistributedDataParallel's `module.` and `torch.compile`'s `_orig_mod.`, nested in any
    /// order. The one place this rule lives: everything that opens a model's weights uses it.
    pub fn wrapper_prefixes(&self) -> Vec<&'static str> {
        let mut keys: Vec<&str> = self.keys().collect();
        let mut found = Vec::new();
        // Each round strips a non-empty prefix from every key, so the loop ends.
        while let Some(prefix) = WRAPPER_PREFIXES
            .into_iter()
            .find(|p| !keys.is_empty() && keys.iter().all(|k| k.starts_with(p)))
        {
            found.push(prefix);
            keys = keys.iter().map(|k| &k[prefix.len()..]).collect();
        }
        found
    }

    /// The state dict without the wrapper prefixes of [`StateDict::wrapper_prefixes`], so that
    /// a file saved from `nn.DataParallel(model)` or `torch.compile(model)` loads into the bare
    /// model (PyTorch: `consume_prefix_in_state_dict_if_present(sd, "module.")`).
    pub fn strip_wrappers(&self) -> StateDict {
        let mut sd = self.clone();
        for prefix in self.wrapper_prefixes() {
            // Every key carries the prefix, so no two keys can meet.
            sd = sd
                .strip_prefix(prefix)
                .expect("stripping a prefix every key has maps keys one to one");
        }
        sd
    }

    /// Puts `prefix` in front of every key (e.g. `"module."` to load into a DataParallel model).
    pub fn add_prefix(&self, prefix: &str) -> StateDict {
        self.map_keys(
            || KeyRule::add_prefix(prefix),
            |k| Some(format!("{prefix}{k}")),
        )
        .expect("distinct keys stay distinct under one prefix")
    }

    /// Renames keys with a regular expression (`$1`-style references in `replacement`); keys the
    /// pattern does not match are kept. A rename that maps two keys onto one (`^layer1\.` →
    /// `layer2.` on a ResNet) is an [`Error::KeyCollision`] naming them.
    pub fn rename_regex(&self, pattern: &str, replacement: &str) -> Result<StateDict> {
        let re = compile(pattern)?;
        self.map_keys(
            || KeyRule::rename(pattern, replacement),
            |k| Some(re.replace_all(k, replacement).into_owned()),
        )
    }

    /// Drops every key the regular expression matches (anywhere in the key).
    pub fn drop_matching(&self, pattern: &str) -> Result<StateDict> {
        let re = compile(pattern)?;
        self.map_keys(
            || KeyRule::drop(pattern),
            |k| (!re.is_match(k)).then(|| k.to_string()),
        )
    }

    /// Keeps only the given keys (e.g. a model's own `state_dict()` keys), in this dict's order.
    pub fn keep_only<'a>(&self, keys: impl IntoIterator<Item = &'a str>) -> StateDict {
        let keep: std::collections::HashSet<&str> = keys.into_iter().collect();
        let mut out = StateDict::new();
        for (k, v) in self.iter_values().filter(|(k, _)| keep.contains(k)) {
            out.insert_value(k.to_string(), v);
        }
        if let Some(meta) = self.metadata() {
            out.set_metadata(meta.to_vec());
        }
        out
    }

    /// Casts floating-point tensors to `dtype`; integer and bool tensors (counters, masks) are
    /// kept as they are, as PyTorch's `model.to(dtype)` does, and so are raw tensors (dtypes
    /// candle cannot compute with: they stay byte for byte).
    pub fn to_dtype(&self, dtype: DType) -> Result<StateDict> {
        let mut out = StateDict::new();
        for (k, v) in self.iter_values() {
            let v = match v {
                Value::Tensor(t) if t.dtype().is_float() && dtype.is_float() => {
                    Value::Tensor(t.to_dtype(dtype)?)
                }
                other => other,
            };
            out.insert_value(k.to_string(), v);
        }
        if let Some(meta) = self.metadata() {
            out.set_metadata(meta.to_vec());
        }
        Ok(out)
    }

    /// Moves every tensor to `device` (raw tensors stay host bytes, and so do tensors of a
    /// dtype `device` cannot hold: i16/i32 on CUDA, see [`crate::device_dtypes`]).
    pub fn to_device(&self, device: &Device) -> Result<StateDict> {
        let mut out = StateDict::new();
        for (k, v) in self.iter_values() {
            let v = match v {
                Value::Tensor(t) => Value::Tensor(crate::device_dtypes::load_to(&t, device)?),
                other => other,
            };
            out.insert_value(k.to_string(), v);
        }
        if let Some(meta) = self.metadata() {
            out.set_metadata(meta.to_vec());
        }
        Ok(out)
    }
}

/// One step of key surgery, applied to a checkpoint's keys before they are matched against the
/// model. Rules compose: `[StripPrefix("module."), StripPrefix("_orig_mod.")]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRule {
    /// Remove a prefix from the keys that have it (DataParallel's `module.`).
    StripPrefix(String),
    /// Put a prefix in front of every key.
    AddPrefix(String),
    /// Regex rename, `$1`-style references allowed in the replacement.
    Rename {
        /// The pattern.
        pattern: String,
        /// The replacement.
        replacement: String,
    },
    /// Drop every key the pattern matches.
    Drop(String),
    /// Keep only the keys the model has (drops e.g. an old head or auxiliary branches).
    KeepOnlyModelKeys,
}

impl KeyRule {
    /// `KeyRule::StripPrefix`.
    pub fn strip_prefix(prefix: impl Into<String>) -> Self {
        KeyRule::StripPrefix(prefix.into())
    }

    /// `KeyRule::AddPrefix`.
    pub fn add_prefix(prefix: impl Into<String>) -> Self {
        KeyRule::AddPrefix(prefix.into())
    }

    /// `KeyRule::Rename`.
    pub fn rename(pattern: impl Into<String>, replacement: impl Into<String>) -> Self {
        KeyRule::Rename {
            pattern: pattern.into(),
            replacement: replacement.into(),
        }
    }

    /// `KeyRule::Drop`.
    pub fn drop(pattern: impl Into<String>) -> Self {
        KeyRule::Drop(pattern.into())
    }

    /// Applies the rule; `model_keys` are the keys the target model expects. A rule that maps
    /// two keys onto one fails with [`Error::KeyCollision`] rather than drop a tensor.
    pub fn apply(&self, sd: &StateDict, model_keys: &[String]) -> Result<StateDict> {
        match self {
            KeyRule::StripPrefix(p) => sd.strip_prefix(p),
            KeyRule::AddPrefix(p) => Ok(sd.add_prefix(p)),
            KeyRule::Rename {
                pattern,
                replacement,
            } => sd.rename_regex(pattern, replacement),
            KeyRule::Drop(p) => sd.drop_matching(p),
            KeyRule::KeepOnlyModelKeys => Ok(sd.keep_only(model_keys.iter().map(String::as_str))),
        }
    }
}

impl std::fmt::Display for KeyRule {
    /// The Rust expression that builds this rule, for diagnoses ("fix: …").
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyRule::StripPrefix(p) => write!(f, "KeyRule::strip_prefix({p:?})"),
            KeyRule::AddPrefix(p) => write!(f, "KeyRule::add_prefix({p:?})"),
            KeyRule::Rename {
                pattern,
                replacement,
            } => write!(f, "KeyRule::rename({pattern:?}, {replacement:?})"),
            KeyRule::Drop(p) => write!(f, "KeyRule::drop({p:?})"),
            KeyRule::KeepOnlyModelKeys => write!(f, "KeyRule::KeepOnlyModelKeys"),
        }
    }
}
