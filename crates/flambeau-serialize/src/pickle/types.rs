//! What the pickle machine and the table of globals share: the stack item and the resolver
//! of persistent ids. In a file of its own so that neither imports the other.

use flambeau_core::{Object, Value};

use crate::Result;

/// Resolves what the pickle refers to outside itself: storages named by persistent ids.
pub trait Resolver {
    /// The value of a persistent id (for torch.save: a 1-D tensor of the whole storage).
    /// `Ok(None)` during a dry run: tensors that use it become `None`.
    fn persistent(&mut self, pid: &Value) -> Result<Option<Value>>;
    /// An untyped storage (`_rebuild_tensor_v3`) read as `dtype`: a 1-D tensor over the whole
    /// storage, or a raw one for dtypes candle lacks.
    fn typed(&mut self, key: &str, dtype: &str) -> Result<Option<Value>>;
}

/// A value on the stack or in the memo.
#[derive(Debug, Clone)]
pub(crate) enum Item {
    /// An ordinary value, with its nesting depth.
    Value(Value, u32),
    /// A global (class or function) named by GLOBAL / STACK_GLOBAL.
    Global(String, String),
}

impl Item {
    pub(crate) fn depth(&self) -> u32 {
        match self {
            Item::Value(_, d) => *d,
            Item::Global(..) => 0,
        }
    }

    /// The item as a value: a global that is not called becomes a dtype or a class reference.
    pub(crate) fn into_value(self) -> Value {
        match self {
            Item::Value(v, _) => v,
            Item::Global(module, name) => global_value(&module, &name),
        }
    }
}

/// dtype names `torch.<name>` can refer to.
const DTYPE_NAMES: &[&str] = &[
    "float64",
    "float32",
    "float16",
    "bfloat16",
    "int64",
    "int32",
    "int16",
    "int8",
    "uint8",
    "bool",
    "uint16",
    "uint32",
    "uint64",
    "complex64",
    "complex128",
    "float8_e4m3fn",
    "float8_e5m2",
    "double",
    "float",
    "half",
    "long",
    "int",
    "short",
];

/// A global that is referenced but not called: a dtype, or a class reference kept inert.
pub fn global_value(module: &str, name: &str) -> Value {
    if module == "torch" && DTYPE_NAMES.contains(&name) {
        return Value::Dtype(name.to_string());
    }
    Value::Object(Object {
        class: format!("{module}.{name}"),
        args: Vec::new(),
        state: None,
    })
}
