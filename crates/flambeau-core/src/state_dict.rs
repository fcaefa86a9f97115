//! [`StateDict`]: an ordered map from PyTorch names to tensors.

use candle_core::Tensor;
use indexmap::IndexMap;

use crate::value::{Dict, DictKind, Value};
use crate::{Error, Result};

/// An ordered `name → tensor` map, as `model.state_dict()` returns in PyTorch.
///
/// `metadata` carries PyTorch's `_metadata` (module prefix → class `version`), which decides for
/// example whether a BatchNorm checkpoint predates `num_batches_tracked`.
#[derive(Debug, Clone, Default)]
pub struct StateDict {
    tensors: IndexMap<String, Tensor>,
    metadata: Option<Vec<(String, u32)>>,
}

impl StateDict {
    /// An empty state dict.
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts (or replaces, keeping its position) a tensor.
    pub fn insert(&mut self, name: impl Into<String>, tensor: Tensor) -> Option<Tensor> {
        self.tensors.insert(name.into(), tensor)
    }

    /// The tensor under `name`.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    /// Removes `name`, keeping the order of the rest.
    pub fn remove(&mut self, name: &str) -> Option<Tensor> {
        self.tensors.shift_remove(name)
    }

    /// True when `name` is present.
    pub fn contains_key(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Names in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// `(name, tensor)` pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.tensors.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// PyTorch's `_metadata`: `(module prefix, version)` pairs, when the file had them.
    pub fn metadata(&self) -> Option<&[(String, u32)]> {
        self.metadata.as_deref()
    }

    /// Replaces the `_metadata`.
    pub fn set_metadata(&mut self, metadata: Vec<(String, u32)>) {
        self.metadata = Some(metadata);
    }

    /// Drops the `_metadata` (as a state dict built by hand has none).
    pub fn clear_metadata(&mut self) {
        self.metadata = None;
    }

    /// The version PyTorch recorded for the module at `prefix` (`""` = root), if any.
    pub fn module_version(&self, prefix: &str) -> Option<u32> {
        self.metadata
            .as_ref()?
            .iter()
            .find(|(p, _)| p == prefix)
            .map(|(_, v)| *v)
    }

    /// The state dict as the Python value `torch.save(model.state_dict())` pickles: an
    /// `OrderedDict` of tensors with `_metadata` attached.
    pub fn to_value(&self) -> Value {
        let mut dict = Dict::new(DictKind::Ordered);
        for (k, t) in &self.tensors {
            dict.entries
                .push((Value::Str(k.clone()), Value::Tensor(t.clone())));
        }
        if let Some(meta) = &self.metadata {
            let mut m = Dict::new(DictKind::Ordered);
            for (prefix, version) in meta {
                let mut v = Dict::new(DictKind::Plain);
                v.insert("version", Value::Int(*version as i64));
                m.entries.push((Value::Str(prefix.clone()), Value::Dict(v)));
            }
            let mut attrs = Dict::new(DictKind::Plain);
            attrs.insert("_metadata", Value::Dict(m));
            dict.attrs = Some(Box::new(Value::Dict(attrs)));
        }
        Value::Dict(dict)
    }

    /// Reads a dict of `str → Tensor` (and its `_metadata`, when present). Entries that are not
    /// tensors are an error naming the key; use the serialize crate's `find_state_dict` to dig a
    /// state dict out of a training checkpoint first.
    pub fn from_value(value: &Value) -> Result<Self> {
        let dict = value.as_dict().ok_or_else(|| {
            Error::Type(format!(
                "expected a dict of tensors for a state_dict, found {}",
                value.type_name()
            ))
        })?;
        let mut sd = StateDict::new();
        for (k, v) in &dict.entries {
            let key = k.as_str().ok_or_else(|| {
                Error::Type(format!(
                    "state_dict keys must be strings, found a key of type {}",
                    k.type_name()
                ))
            })?;
            let t = v.as_tensor().ok_or_else(|| {
                Error::Type(format!(
                    "state_dict entry `{key}` is a {}, not a tensor",
                    v.type_name()
                ))
            })?;
            sd.insert(key, t.clone());
        }
        sd.metadata = dict
            .attrs
            .as_deref()
            .and_then(|a| a.get("_metadata"))
            .and_then(Value::as_dict)
            .map(|m| {
                m.entries
                    .iter()
                    .filter_map(|(p, v)| {
                        let version = v.get("version")?.as_i64()?;
                        Some((p.as_str()?.to_string(), u32::try_from(version).ok()?))
                    })
                    .collect()
            });
        Ok(sd)
    }
}

impl FromIterator<(String, Tensor)> for StateDict {
    fn from_iter<I: IntoIterator<Item = (String, Tensor)>>(iter: I) -> Self {
        Self {
            tensors: iter.into_iter().collect(),
            metadata: None,
        }
    }
}

impl<'a> IntoIterator for &'a StateDict {
    type Item = (&'a String, &'a Tensor);
    type IntoIter = indexmap::map::Iter<'a, String, Tensor>;
    fn into_iter(self) -> Self::IntoIter {
        self.tensors.iter()
    }
}
