//! The JSON encoding of Python values used by the optim fixtures (see xtask/fixtures/optim.py):
//! `{"__dict__": [[k, v], …]}`, `{"__tuple__": […]}`, `{"__counter__": …}`, `{"__float__": "repr"}`,
//! `{"__tensor__": "path"}` with the tensor stored in a safetensors file beside it.
#![allow(dead_code)]

use std::collections::HashMap;

use candle_core::Tensor;
use flambeau_core::{Dict, DictKind, Value};
use serde_json::{json, Value as Json};

/// Decodes a fixture value into a flambeau `Value`.
pub fn to_value(j: &Json, tensors: &HashMap<String, Tensor>) -> Value {
    match j {
        Json::Null => Value::None,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().unwrap()),
        },
        Json::String(s) => Value::Str(s.clone()),
        Json::Array(a) => Value::List(a.iter().map(|x| to_value(x, tensors)).collect()),
        Json::Object(o) => {
            if let Some(Json::String(f)) = o.get("__float__") {
                Value::Float(parse_float(f))
            } else if let Some(Json::String(p)) = o.get("__tensor__") {
                Value::Tensor(
                    tensors
                        .get(p)
                        .unwrap_or_else(|| panic!("no tensor {p}"))
                        .clone(),
                )
            } else if let Some(Json::Array(items)) = o.get("__tuple__") {
                Value::Tuple(items.iter().map(|x| to_value(x, tensors)).collect())
            } else {
                let (kind, items) = match (o.get("__dict__"), o.get("__counter__")) {
                    (Some(Json::Array(i)), _) => (DictKind::Plain, i),
                    (_, Some(Json::Array(i))) => (DictKind::Counter, i),
                    _ => panic!("unknown encoding {j}"),
                };
                let mut d = Dict::new(kind);
                for kv in items {
                    d.entries
                        .push((to_value(&kv[0], tensors), to_value(&kv[1], tensors)));
                }
                Value::Dict(d)
            }
        }
    }
}

/// Python's float repr back to f64 (`inf`, `nan` included).
pub fn parse_float(s: &str) -> f64 {
    match s {
        "inf" => f64::INFINITY,
        "-inf" => f64::NEG_INFINITY,
        "nan" => f64::NAN,
        _ => s.parse().unwrap(),
    }
}

/// Encodes a flambeau `Value` for the Python side; tensors are collected into `tensors`.
pub fn to_json(v: &Value, tensors: &mut HashMap<String, Tensor>, path: &str) -> Json {
    match v {
        Value::None => Json::Null,
        Value::Bool(b) => json!(b),
        Value::Int(i) => json!(i),
        Value::Float(f) => json!({"__float__": format!("{f:?}")}),
        Value::Str(s) => json!(s),
        Value::List(items) => Json::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, x)| to_json(x, tensors, &format!("{path}.{i}")))
                .collect(),
        ),
        Value::Tuple(items) => json!({"__tuple__": items
            .iter()
            .enumerate()
            .map(|(i, x)| to_json(x, tensors, &format!("{path}.{i}")))
            .collect::<Vec<_>>()}),
        Value::Dict(d) => {
            let items: Vec<Json> = d
                .entries
                .iter()
                .map(|(k, x)| {
                    let key = match k {
                        Value::Str(s) => s.clone(),
                        Value::Int(i) => i.to_string(),
                        other => panic!("key {other:?}"),
                    };
                    json!([
                        to_json(k, tensors, path),
                        to_json(x, tensors, &format!("{path}.{key}"))
                    ])
                })
                .collect();
            match d.kind {
                DictKind::Counter => json!({"__counter__": items}),
                _ => json!({"__dict__": items}),
            }
        }
        Value::Tensor(t) => {
            tensors.insert(path.to_string(), t.contiguous().unwrap());
            json!({"__tensor__": path})
        }
        other => panic!("cannot encode {other:?}"),
    }
}

/// Asserts that `ours` equals the fixture's value: same keys in the same order, numbers equal
/// (ints and floats compared as numbers, within `rtol`), tensors close.
pub fn assert_matches(ours: &Value, theirs: &Value, path: &str, rtol: f64) {
    match (ours, theirs) {
        (Value::Dict(a), Value::Dict(b)) => {
            let ka: Vec<String> = a.entries.iter().map(|(k, _)| format!("{k:?}")).collect();
            let kb: Vec<String> = b.entries.iter().map(|(k, _)| format!("{k:?}")).collect();
            assert_eq!(ka, kb, "{path}: keys differ");
            assert_eq!(a.kind, b.kind, "{path}: dict kind");
            for ((_, x), (k, y)) in a.entries.iter().zip(&b.entries) {
                assert_matches(x, y, &format!("{path}.{k:?}"), rtol);
            }
        }
        (Value::List(a), Value::List(b)) | (Value::Tuple(a), Value::Tuple(b)) => {
            assert_eq!(a.len(), b.len(), "{path}: lengths differ");
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                assert_matches(x, y, &format!("{path}[{i}]"), rtol);
            }
        }
        (Value::Tensor(a), Value::Tensor(b)) => {
            assert_eq!(a.dtype(), b.dtype(), "{path}: dtype");
            flambeau_testkit::assert_close(path, a, b, rtol, 1e-7);
        }
        (Value::Bool(a), Value::Bool(b)) => assert_eq!(a, b, "{path}"),
        (Value::Str(a), Value::Str(b)) => assert_eq!(a, b, "{path}"),
        (Value::None, Value::None) => {}
        (a, b) => {
            let (x, y) = (a.as_f64(), b.as_f64());
            assert!(x.is_some() && y.is_some(), "{path}: {a:?} vs fixture {b:?}");
            let (x, y) = (x.unwrap(), y.unwrap());
            assert!(
                (x - y).abs() <= rtol * y.abs().max(1e-300) || x == y,
                "{path}: {x} vs fixture {y}"
            );
        }
    }
}
