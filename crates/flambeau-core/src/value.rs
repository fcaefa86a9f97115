//! [`Value`]: the tree of Python objects a checkpoint holds.
//!
//! A `.pth` file is a pickle of nested dicts, lists, tuples, numbers, strings and tensors, and
//! sometimes of arbitrary classes (an `argparse.Namespace`, a numpy scalar, a whole `nn.Module`).
//! flambeau never executes anything: known types become the variants below and any other class
//! becomes an inert [`Object`] that can be inspected and dropped.

use candle_core::Tensor;

use crate::raw_tensor::RawTensor;

/// Which Python mapping type a [`Dict`] was (or should be written as).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DictKind {
    /// `dict`
    #[default]
    Plain,
    /// `collections.OrderedDict` (what `state_dict()` returns)
    Ordered,
    /// `collections.Counter` (MultiStepLR's `milestones`)
    Counter,
}

/// An insertion-ordered Python mapping. Keys may be any hashable value (optimizer state is keyed
/// by `int`), so this is a list of pairs rather than a map; lookups by string key are linear,
/// which is fine for the sizes checkpoints have.
#[derive(Debug, Clone, Default)]
pub struct Dict {
    /// The Python type.
    pub kind: DictKind,
    /// Entries in insertion order.
    pub entries: Vec<(Value, Value)>,
    /// Attributes set on the dict object itself by pickle's BUILD: a `state_dict()` carries
    /// `{'_metadata': OrderedDict({prefix: {'version': v}})}` here.
    pub attrs: Option<Box<Value>>,
}

impl Dict {
    /// An empty dict of the given kind.
    pub fn new(kind: DictKind) -> Self {
        Self {
            kind,
            entries: Vec::new(),
            attrs: None,
        }
    }

    /// The value for a string key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    /// The value for any key, compared structurally (ints, strings, …).
    pub fn get_value(&self, key: &Value) -> Option<&Value> {
        self.entries
            .iter()
            .find(|(k, _)| k.same_key(key))
            .map(|(_, v)| v)
    }

    /// Inserts or replaces (keeping the original position, as Python does).
    pub fn insert(&mut self, key: impl Into<Value>, value: impl Into<Value>) {
        let key = key.into();
        let value = value.into();
        match self.entries.iter_mut().find(|(k, _)| k.same_key(&key)) {
            Some(slot) => slot.1 = value,
            None => self.entries.push((key, value)),
        }
    }

    /// Removes a string key, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let pos = self
            .entries
            .iter()
            .position(|(k, _)| k.as_str() == Some(key))?;
        Some(self.entries.remove(pos).1)
    }

    /// The string keys, in order (non-string keys are skipped).
    pub fn str_keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().filter_map(|(k, _)| k.as_str())
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// An instance of a Python class flambeau does not know, kept inert: the class it names, the
/// arguments its constructor would have been called with, and the state `BUILD` would have set.
/// Nothing is ever executed.
#[derive(Debug, Clone)]
pub struct Object {
    /// `module.QualName`, e.g. `argparse.Namespace` or `numpy.core.multiarray.scalar`.
    pub class: String,
    /// Constructor arguments (from REDUCE / NEWOBJ), possibly empty.
    pub args: Vec<Value>,
    /// The state set by BUILD (often a dict of attributes), if any.
    pub state: Option<Box<Value>>,
}

/// A Python value as found in (or to be written to) a checkpoint.
#[derive(Debug, Clone)]
pub enum Value {
    /// `None`
    None,
    /// `bool`
    Bool(bool),
    /// `int` that fits in 64 bits
    Int(i64),
    /// `int` that does not fit in 64 bits: little-endian two's complement bytes, as pickle's LONG1.
    BigInt(Vec<u8>),
    /// `float`
    Float(f64),
    /// `str`
    Str(String),
    /// `bytes` / `bytearray`
    Bytes(Vec<u8>),
    /// `list`
    List(Vec<Value>),
    /// `tuple` (and `torch.Size`, which is a tuple subclass)
    Tuple(Vec<Value>),
    /// `set` / `frozenset`
    Set(Vec<Value>),
    /// `dict`, `OrderedDict`, `Counter`
    Dict(Dict),
    /// A tensor (from `_rebuild_tensor_v2`, `_rebuild_parameter`, …). Views keep sharing the
    /// storage they were read from.
    Tensor(Tensor),
    /// A tensor candle cannot hold exactly (int8, bool, uint16/64, complex, float8_e5m2,
    /// quantized, sparse), kept as typed raw data so that it is written back unchanged.
    RawTensor(RawTensor),
    /// `torch.device('cuda:0')`
    Device(String),
    /// A `torch.dtype`, by its PyTorch name without the `torch.` prefix (`float32`).
    Dtype(String),
    /// Any other class, inert.
    Object(Object),
}

impl Value {
    /// The string, if this is a `str`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is an `int` (or a `bool`, as in Python).
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(*b as i64),
            _ => None,
        }
    }

    /// The number as f64, if this is a `float`, `int` or `bool`.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            Value::Bool(b) => Some(*b as i64 as f64),
            _ => None,
        }
    }

    /// The bool, if this is a `bool`.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The tensor, if this is one.
    pub fn as_tensor(&self) -> Option<&Tensor> {
        match self {
            Value::Tensor(t) => Some(t),
            _ => None,
        }
    }

    /// The raw tensor, if this is one.
    pub fn as_raw_tensor(&self) -> Option<&RawTensor> {
        match self {
            Value::RawTensor(t) => Some(t),
            _ => None,
        }
    }

    /// True for a tensor of any kind (a candle tensor or a raw one).
    pub fn is_tensor(&self) -> bool {
        matches!(self, Value::Tensor(_) | Value::RawTensor(_))
    }

    /// The dict, if this is one.
    pub fn as_dict(&self) -> Option<&Dict> {
        match self {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }

    /// The dict, mutably, if this is one.
    pub fn as_dict_mut(&mut self) -> Option<&mut Dict> {
        match self {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }

    /// The items, if this is a list or a tuple.
    pub fn as_seq(&self) -> Option<&[Value]> {
        match self {
            Value::List(v) | Value::Tuple(v) => Some(v),
            _ => None,
        }
    }

    /// `value[key]` for a dict with string keys.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_dict().and_then(|d| d.get(key))
    }

    /// A short Python-ish name of the type, for error messages (`dict`, `Tensor`, `argparse.Namespace`).
    pub fn type_name(&self) -> &str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::BigInt(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::List(_) => "list",
            Value::Tuple(_) => "tuple",
            Value::Set(_) => "set",
            Value::Dict(d) => match d.kind {
                DictKind::Plain => "dict",
                DictKind::Ordered => "OrderedDict",
                DictKind::Counter => "Counter",
            },
            Value::Tensor(_) | Value::RawTensor(_) => "Tensor",
            Value::Device(_) => "torch.device",
            Value::Dtype(_) => "torch.dtype",
            Value::Object(o) => &o.class,
        }
    }

    /// Structural equality for dict keys: ints, strings, bools, None and tuples of those.
    pub fn same_key(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::None, Value::None) => true,
            (Value::Str(a), Value::Str(b)) => a == b,
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Int(a), Value::Bool(b)) | (Value::Bool(b), Value::Int(a)) => *a == *b as i64,
            (Value::Float(a), Value::Float(b)) => a == b,
            (Value::BigInt(a), Value::BigInt(b)) => a == b,
            (Value::Bytes(a), Value::Bytes(b)) => a == b,
            (Value::Tuple(a), Value::Tuple(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.same_key(y))
            }
            _ => false,
        }
    }

    /// A plain `dict` from string keys.
    pub fn dict<K: Into<String>>(entries: impl IntoIterator<Item = (K, Value)>) -> Value {
        Value::Dict(Dict {
            kind: DictKind::Plain,
            entries: entries
                .into_iter()
                .map(|(k, v)| (Value::Str(k.into()), v))
                .collect(),
            attrs: None,
        })
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<usize> for Value {
    fn from(v: usize) -> Self {
        Value::Int(v as i64)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Str(v.to_string())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Str(v)
    }
}
impl From<Tensor> for Value {
    fn from(v: Tensor) -> Self {
        Value::Tensor(v)
    }
}
impl From<RawTensor> for Value {
    fn from(v: RawTensor) -> Self {
        Value::RawTensor(v)
    }
}
impl From<Dict> for Value {
    fn from(v: Dict) -> Self {
        Value::Dict(v)
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::None, Into::into)
    }
}
