//! [`StateDict`]: an ordered map from PyTorch names to tensors.

use candle_core::{DType, Device, Tensor};
use indexmap::IndexMap;

use crate::raw_tensor::RawTensor;
use crate::value::{Dict, DictKind, Value};
use crate::{Error, Result};

/// One entry: a candle tensor, or a tensor candle cannot hold exactly.
#[derive(Debug, Clone)]
enum Entry {
    Tensor(Tensor),
    Raw(RawTensor),
}

/// An ordered `name → tensor` map, as `model.state_dict()` returns in PyTorch.
///
/// `metadata` carries PyTorch's `_metadata` (module prefix → class `version`), which decides for
/// example whether a BatchNorm checkpoint predates `num_batches_tracked`.
///
/// Tensors of dtypes or layouts candle lacks (int8, bool, complex, quantized, sparse, …) are
/// kept as [`RawTensor`]s in their place: [`iter`](Self::iter) and [`get`](Self::get) see the
/// candle tensors, [`keys`](Self::keys) and [`len`](Self::len) every entry, and
/// [`to_value`](Self::to_value) writes both back in the original order.
#[derive(Debug, Clone, Default)]
pub struct StateDict {
    tensors: IndexMap<String, Entry>,
    metadata: Option<Vec<(String, u32)>>,
}

/// Marks the placeholder that stands for raw entry `i` while a tensor-only transformation runs
/// (see [`StateDict::map_keeping_raw`]): a zero-element u8 tensor of shape `[0, RAW_MARK, i]`,
/// which no real checkpoint has, costs no memory, and survives renames, casts and moves.
const RAW_MARK: usize = 0x7a11_0c8d;

fn tensor_of(e: &Entry) -> Option<&Tensor> {
    match e {
        Entry::Tensor(t) => Some(t),
        Entry::Raw(_) => None,
    }
}

impl StateDict {
    /// An empty state dict.
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts (or replaces, keeping its position) a tensor. Returns the candle tensor it
    /// replaced, if any.
    pub fn insert(&mut self, name: impl Into<String>, tensor: Tensor) -> Option<Tensor> {
        match self.tensors.insert(name.into(), Entry::Tensor(tensor)) {
            Some(Entry::Tensor(t)) => Some(t),
            _ => None,
        }
    }

    /// Inserts (or replaces, keeping its position) a tensor candle cannot hold.
    pub fn insert_raw(&mut self, name: impl Into<String>, tensor: RawTensor) {
        self.tensors.insert(name.into(), Entry::Raw(tensor));
    }

    /// Inserts an entry given as a [`Value`] (what [`iter_values`](Self::iter_values) yields):
    /// a tensor or a raw tensor; anything else is not a state dict entry and is ignored.
    pub(crate) fn insert_value(&mut self, name: String, value: Value) {
        match value {
            Value::Tensor(t) => {
                self.insert(name, t);
            }
            Value::RawTensor(r) => self.insert_raw(name, r),
            _ => {}
        }
    }

    /// The candle tensor under `name` (`None` for a raw one: see [`get_raw`](Self::get_raw)).
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name).and_then(tensor_of)
    }

    /// The raw tensor under `name`, if the entry is one.
    pub fn get_raw(&self, name: &str) -> Option<&RawTensor> {
        match self.tensors.get(name) {
            Some(Entry::Raw(r)) => Some(r),
            _ => None,
        }
    }

    /// Removes `name` (of either kind), keeping the order of the rest; returns it if it was a
    /// candle tensor.
    pub fn remove(&mut self, name: &str) -> Option<Tensor> {
        match self.tensors.shift_remove(name) {
            Some(Entry::Tensor(t)) => Some(t),
            _ => None,
        }
    }

    /// True when `name` is present.
    pub fn contains_key(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Number of entries (candle and raw tensors).
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Names of every entry (raw ones included), in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// `(name, tensor)` pairs of the candle tensors, in order (raw entries are skipped: see
    /// [`iter_raw`](Self::iter_raw)).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.tensors
            .iter()
            .filter_map(|(k, v)| Some((k.as_str(), tensor_of(v)?)))
    }

    /// `(name, raw tensor)` pairs, in order.
    pub fn iter_raw(&self) -> impl Iterator<Item = (&str, &RawTensor)> {
        self.tensors.iter().filter_map(|(k, v)| match v {
            Entry::Raw(r) => Some((k.as_str(), r)),
            Entry::Tensor(_) => None,
        })
    }

    /// Every entry in order, as a [`Value`] (`Value::Tensor` or `Value::RawTensor`).
    pub fn iter_values(&self) -> impl Iterator<Item = (&str, Value)> {
        self.tensors.iter().map(|(k, v)| {
            (
                k.as_str(),
                match v {
                    Entry::Tensor(t) => Value::Tensor(t.clone()),
                    Entry::Raw(r) => Value::RawTensor(r.clone()),
                },
            )
        })
    }

    /// Applies a transformation written for candle tensors only (key rules, casts, moves)
    /// without losing the raw entries: each stands in as a zero-size placeholder while `f`
    /// runs and takes its place back afterwards, under whatever key `f` gave it (or is dropped
    /// if `f` dropped it).
    pub fn map_keeping_raw(
        &self,
        f: impl FnOnce(&StateDict) -> Result<StateDict>,
    ) -> Result<StateDict> {
        let raws: Vec<&RawTensor> = self.iter_raw().map(|(_, r)| r).collect();
        if raws.is_empty() {
            return f(self);
        }
        let mut stand_in = StateDict {
            tensors: IndexMap::with_capacity(self.tensors.len()),
            metadata: self.metadata.clone(),
        };
        let mut i = 0;
        for (k, v) in &self.tensors {
            let t = match v {
                Entry::Tensor(t) => t.clone(),
                Entry::Raw(_) => {
                    i += 1;
                    Tensor::zeros((0, RAW_MARK, i - 1), DType::U8, &Device::Cpu)?
                }
            };
            stand_in.tensors.insert(k.clone(), Entry::Tensor(t));
        }
        let mut out = f(&stand_in)?;
        for entry in out.tensors.values_mut() {
            if let Entry::Tensor(t) = entry {
                if let [0, RAW_MARK, i] = *t.dims() {
                    if let Some(r) = raws.get(i) {
                        *entry = Entry::Raw((*r).clone());
                    }
                }
            }
        }
        Ok(out)
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
        for (k, v) in self.iter_values() {
            dict.entries.push((Value::Str(k.to_string()), v));
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
            match v {
                Value::Tensor(t) => {
                    sd.insert(key, t.clone());
                }
                Value::RawTensor(r) => sd.insert_raw(key, r.clone()),
                _ => {
                    return Err(Error::Type(format!(
                        "state_dict entry `{key}` is a {}, not a tensor",
                        v.type_name()
                    )))
                }
            }
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
            tensors: iter
                .into_iter()
                .map(|(k, t)| (k, Entry::Tensor(t)))
                .collect(),
            metadata: None,
        }
    }
}

impl<'a> IntoIterator for &'a StateDict {
    type Item = (&'a String, &'a Tensor);
    type IntoIter = Box<dyn Iterator<Item = (&'a String, &'a Tensor)> + 'a>;
    /// The candle tensors, in order (as [`StateDict::iter`]).
    fn into_iter(self) -> Self::IntoIter {
        Box::new(
            self.tensors
                .iter()
                .filter_map(|(k, e)| Some((k, tensor_of(e)?))),
        )
    }
}
