//! The fixed table of globals the reader understands. Nothing here runs code from the file:
//! known names rebuild tensors and containers, anything else becomes an inert object.

use flambeau_core::{Dict, DictKind, Object, Value};

use super::vm::{Item, Resolver};
use crate::storage;
use crate::{Error, Result};

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

fn bad(message: impl Into<String>) -> Error {
    Error::Pickle {
        offset: 0,
        message: message.into(),
    }
}

fn usize_arg(v: &Value, what: &str) -> Result<usize> {
    v.as_i64()
        .and_then(|i| usize::try_from(i).ok())
        .ok_or_else(|| {
            bad(format!(
                "{what} must be a non-negative int, got {}",
                v.type_name()
            ))
        })
}

fn usizes(v: &Value, what: &str) -> Result<Vec<usize>> {
    v.as_seq()
        .ok_or_else(|| bad(format!("{what} must be a tuple, got {}", v.type_name())))?
        .iter()
        .map(|x| usize_arg(x, what))
        .collect()
}

/// `_rebuild_tensor(storage, storage_offset, size, stride, …)`.
fn rebuild_tensor(storage: &Value, args: &[Value]) -> Result<Value> {
    if args.len() < 4 {
        return Err(bad("_rebuild_tensor needs (storage, offset, size, stride)"));
    }
    let base = match storage {
        Value::Tensor(t) => t,
        Value::None => return Ok(Value::None), // dry run
        other => return Err(bad(format!("tensor storage is a {}", other.type_name()))),
    };
    let offset = usize_arg(&args[1], "storage_offset")?;
    let size = usizes(&args[2], "size")?;
    let stride = usizes(&args[3], "stride")?;
    let key = format!("{:?}", base.id());
    Ok(Value::Tensor(storage::view(
        base, &key, offset, &size, &stride,
    )?))
}

/// `_rebuild_tensor_v3(untyped_storage, offset, size, stride, requires_grad, hooks, dtype, …)`.
fn rebuild_tensor_v3(args: &[Value], resolver: &mut dyn Resolver) -> Result<Value> {
    if args.len() < 7 {
        return Err(bad("_rebuild_tensor_v3 needs 7 arguments"));
    }
    let dtype = match &args[6] {
        Value::Dtype(d) => d.clone(),
        other => {
            return Err(bad(format!(
                "_rebuild_tensor_v3 dtype is a {}",
                other.type_name()
            )))
        }
    };
    let storage = match &args[0] {
        Value::Object(o) if o.class == UNTYPED => {
            let key = o
                .args
                .first()
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            match resolver.typed(&key, &dtype)? {
                Some(t) => Value::Tensor(t),
                None => Value::None,
            }
        }
        other => other.clone(),
    };
    rebuild_tensor(&storage, args)
}

/// The class name the resolver gives untyped storages until a dtype is known.
pub const UNTYPED: &str = "torch.UntypedStorage";

/// Applies a callable to arguments.
pub(crate) fn call(callable: Item, args: Vec<Value>, resolver: &mut dyn Resolver) -> Result<Value> {
    let (module, name) = match callable {
        Item::Global(m, n) => (m, n),
        Item::Value(Value::Object(o), _) if o.args.is_empty() && o.state.is_none() => {
            // A class reference that went through a container: call it by name.
            match o.class.rsplit_once('.') {
                Some((m, n)) => (m.to_string(), n.to_string()),
                None => (String::new(), o.class.clone()),
            }
        }
        Item::Value(v, _) => {
            return Err(bad(format!("cannot call a {}", v.type_name())));
        }
    };
    let first = args.first();
    match (module.as_str(), name.as_str()) {
        ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") => {
            rebuild_tensor(first.unwrap_or(&Value::None), &args)
        }
        ("torch._utils", "_rebuild_tensor_v3") => rebuild_tensor_v3(&args, resolver),
        ("torch._utils", "_rebuild_parameter")
        | ("torch._utils", "_rebuild_parameter_with_state")
        | ("torch.nn.parameter", "Parameter") => Ok(first.cloned().unwrap_or(Value::None)),
        ("collections", "OrderedDict") => {
            let mut d = Dict::new(DictKind::Ordered);
            if let Some(items) = first.and_then(Value::as_seq) {
                for pair in items {
                    if let Some([k, v]) = pair.as_seq() {
                        d.insert(k.clone(), v.clone());
                    }
                }
            }
            Ok(Value::Dict(d))
        }
        ("collections", "Counter") => {
            let mut d = match first {
                Some(Value::Dict(d)) => d.clone(),
                _ => Dict::new(DictKind::Counter),
            };
            d.kind = DictKind::Counter;
            Ok(Value::Dict(d))
        }
        ("torch", "Size") => Ok(Value::Tuple(
            first.and_then(Value::as_seq).unwrap_or(&[]).to_vec(),
        )),
        ("torch", "device") => {
            let kind = first.and_then(Value::as_str).unwrap_or("cpu");
            Ok(Value::Device(match args.get(1).and_then(Value::as_i64) {
                Some(i) => format!("{kind}:{i}"),
                None => kind.to_string(),
            }))
        }
        ("builtins" | "__builtin__", "set" | "frozenset") => Ok(Value::Set(
            first.and_then(Value::as_seq).unwrap_or(&[]).to_vec(),
        )),
        ("builtins" | "__builtin__", "bytearray" | "bytes") => match first {
            Some(Value::Bytes(b)) => Ok(Value::Bytes(b.clone())),
            None => Ok(Value::Bytes(Vec::new())),
            _ => Ok(inert(module, name, args)),
        },
        ("_codecs", "encode") => match (first, args.get(1).and_then(Value::as_str)) {
            (Some(Value::Str(s)), Some("latin1" | "latin-1")) => {
                let bytes: Option<Vec<u8>> =
                    s.chars().map(|c| u8::try_from(c as u32).ok()).collect();
                bytes
                    .map(Value::Bytes)
                    .ok_or_else(|| bad("_codecs.encode: not latin-1"))
            }
            (Some(Value::Str(s)), _) => Ok(Value::Bytes(s.as_bytes().to_vec())),
            _ => Ok(inert(module, name, args)),
        },
        _ => Ok(inert(module, name, args)),
    }
}

fn inert(module: String, name: String, args: Vec<Value>) -> Value {
    Value::Object(Object {
        class: format!("{module}.{name}"),
        args,
        state: None,
    })
}

/// BUILD: sets the state of an object (`__setstate__` / `__dict__.update`), inertly.
pub(crate) fn build(target: &mut Value, state: Value) {
    match target {
        Value::Object(o) => o.state = Some(Box::new(state)),
        Value::Dict(d) => d.attrs = Some(Box::new(state)),
        // `_rebuild_parameter_with_state` and tensor subclasses: the tensor is what matters.
        Value::Tensor(_) => {}
        _ => {}
    }
}
