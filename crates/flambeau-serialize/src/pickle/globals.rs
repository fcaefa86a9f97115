//! The fixed table of globals the reader understands. Nothing here runs code from the file:
//! known names rebuild tensors and containers, anything else becomes an inert object.

use flambeau_core::{Dict, DictKind, Object, Quantizer, RawData, RawTensor, Value};

use super::types::{Item, Resolver};
use crate::storage;
use crate::{Error, Result};

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

/// `_rebuild_tensor(storage, storage_offset, size, stride, …)`: a view of a candle storage, or
/// of a raw one (dtypes candle lacks). A storage of an unknown type leaves the tensor inert
/// rather than failing the whole file.
fn rebuild_tensor(storage: &Value, args: &[Value]) -> Result<Value> {
    if args.len() < 4 {
        return Err(bad("_rebuild_tensor needs (storage, offset, size, stride)"));
    }
    let offset = usize_arg(&args[1], "storage_offset")?;
    let size = usizes(&args[2], "size")?;
    let stride = usizes(&args[3], "stride")?;
    match storage {
        Value::Tensor(base) => {
            let key = format!("{:?}", base.id());
            Ok(Value::Tensor(storage::view(
                base, &key, offset, &size, &stride,
            )?))
        }
        Value::RawTensor(base) => Ok(Value::RawTensor(storage::raw_view(
            base,
            &base.dtype,
            offset,
            &size,
            &stride,
        )?)),
        Value::None => Ok(Value::None), // dry run
        Value::Object(_) => Ok(inert(
            "torch._utils".into(),
            "_rebuild_tensor_v2".into(),
            args.to_vec(),
        )),
        other => Err(bad(format!("tensor storage is a {}", other.type_name()))),
    }
}

/// The storage an untyped-storage placeholder stands for, read as `dtype`.
fn untyped_as(storage: &Value, dtype: &str, resolver: &mut dyn Resolver) -> Result<Value> {
    Ok(match storage {
        Value::Object(o) if o.class == UNTYPED => {
            let key = o
                .args
                .first()
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            resolver.typed(&key, dtype)?.unwrap_or(Value::None)
        }
        other => other.clone(),
    })
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
    let storage = untyped_as(&args[0], &dtype, resolver)?;
    rebuild_tensor(&storage, args)
}

/// `_rebuild_qtensor(storage, offset, size, stride, quantizer_params, requires_grad, hooks)`:
/// the integer representation stays raw, with its quantizer beside it.
fn rebuild_qtensor(args: &[Value]) -> Result<Value> {
    if args.len() < 5 {
        return Err(bad("_rebuild_qtensor needs 5 arguments"));
    }
    let view = match rebuild_tensor(&args[0], args)? {
        Value::RawTensor(r) => r,
        // dry run, or a storage of an unknown type: keep it inert
        Value::None => return Ok(Value::None),
        _ => {
            return Ok(inert(
                "torch._utils".into(),
                "_rebuild_qtensor".into(),
                args.to_vec(),
            ))
        }
    };
    let RawData::Strided(data) = view.data else {
        return Err(bad("quantized tensor over a non-strided storage"));
    };
    let params = args[4]
        .as_seq()
        .ok_or_else(|| bad("quantizer parameters must be a tuple"))?;
    let scheme = match params.first() {
        Some(Value::Object(o)) => o
            .class
            .strip_prefix("torch.")
            .unwrap_or(&o.class)
            .to_string(),
        _ => return Err(bad("quantizer parameters must start with a qscheme")),
    };
    let quantizer = match (scheme.as_str(), params) {
        ("per_tensor_affine", [_, scale, zero_point, ..]) => Quantizer::PerTensor {
            scale: scale
                .as_f64()
                .ok_or_else(|| bad("q_scale must be a float"))?,
            zero_point: zero_point
                .as_i64()
                .ok_or_else(|| bad("q_zero_point must be an int"))?,
        },
        ("per_channel_affine" | "per_channel_affine_float_qparams", [_, scales, zps, axis, ..]) => {
            Quantizer::PerChannel {
                scheme: scheme.clone(),
                scales: Box::new(scales.clone()),
                zero_points: Box::new(zps.clone()),
                axis: axis
                    .as_i64()
                    .ok_or_else(|| bad("q_per_channel_axis must be an int"))?,
            }
        }
        _ => {
            return Ok(inert(
                "torch._utils".into(),
                "_rebuild_qtensor".into(),
                args.to_vec(),
            ))
        }
    };
    Ok(Value::RawTensor(RawTensor {
        dtype: view.dtype,
        size: view.size,
        data: RawData::Quantized { data, quantizer },
    }))
}

/// PyTorch's dtype name of a tensor value (`float32`), for sparse tensors' values.
fn dtype_of(v: &Value) -> String {
    match v {
        Value::Tensor(t) => storage::for_writing(t.dtype())
            .map(|st| st.dtype.to_string())
            .unwrap_or_else(|_| format!("{:?}", t.dtype())),
        Value::RawTensor(r) => r.dtype.clone(),
        _ => "unknown".into(),
    }
}

/// `_rebuild_sparse_tensor(layout, data)`: the components are ordinary tensors, kept in the
/// order torch.save wrote them.
fn rebuild_sparse(args: &[Value]) -> Result<Value> {
    let layout = match args.first() {
        // `torch.serialization._get_layout('torch.sparse_coo')`, or the global itself
        Some(Value::Object(o)) if o.class == LAYOUT => o
            .args
            .first()
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        Some(Value::Object(o)) if o.class.starts_with("torch.sparse_") => o.class.clone(),
        _ => {
            return Ok(inert(
                "torch._utils".into(),
                "_rebuild_sparse_tensor".into(),
                args.to_vec(),
            ))
        }
    };
    let parts = args
        .get(1)
        .and_then(Value::as_seq)
        .ok_or_else(|| bad("_rebuild_sparse_tensor needs (layout, components)"))?
        .to_vec();
    let (values, size) = if layout == "torch.sparse_coo" {
        (parts.get(1), parts.get(2))
    } else {
        (parts.get(2), parts.get(3))
    };
    let (Some(values), Some(size)) = (values, size) else {
        return Err(bad(format!(
            "{layout} tensor with {} components",
            parts.len()
        )));
    };
    if matches!(values, Value::None) {
        return Ok(Value::None); // dry run: the components are not read
    }
    Ok(Value::RawTensor(RawTensor {
        dtype: dtype_of(values),
        size: usizes(size, "sparse size")?,
        data: RawData::Sparse { layout, parts },
    }))
}

/// The class `torch.serialization._get_layout(name)` becomes: the layout's name as its argument.
pub const LAYOUT: &str = "torch.layout";

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
        ("torch._utils", "_rebuild_qtensor") => rebuild_qtensor(&args),
        ("torch._utils", "_rebuild_sparse_tensor") => rebuild_sparse(&args),
        ("torch.serialization", "_get_layout") => Ok(Value::Object(Object {
            class: LAYOUT.into(),
            args,
            state: None,
        })),
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
        Value::Tensor(_) | Value::RawTensor(_) => {}
        _ => {}
    }
}
