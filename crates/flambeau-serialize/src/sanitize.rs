//! `weights_only` sanitizing: makes a checkpoint acceptable to `torch.load`'s default
//! `weights_only=True` loader. Objects with a lossless plain equivalent become it, anything else
//! is dropped; each decision is reported.

use flambeau_core::{Dict, DictKind, Value};

/// Rewrites `v` in place; returns one line per object converted or dropped.
pub fn sanitize(v: &mut Value, path: &str, report: &mut Vec<String>) {
    match v {
        Value::Dict(d) => {
            let mut kept = Vec::with_capacity(d.entries.len());
            for (k, mut x) in std::mem::take(&mut d.entries) {
                let p = join(path, &k);
                if let Value::Object(_) = &x {
                    match plain(&x) {
                        Some(p_value) => {
                            report.push(format!("{p}: {} → {}", x.type_name(), describe(&p_value)));
                            x = p_value;
                        }
                        None => {
                            report.push(format!(
                                "{p}: dropped {} (no plain equivalent torch.load accepts)",
                                x.type_name()
                            ));
                            continue;
                        }
                    }
                }
                sanitize(&mut x, &p, report);
                kept.push((k, x));
            }
            d.entries = kept;
            if let Some(a) = &mut d.attrs {
                sanitize(a, &format!("{path}.<attrs>"), report);
            }
        }
        Value::List(items) | Value::Tuple(items) | Value::Set(items) => {
            for (i, x) in items.iter_mut().enumerate() {
                let p = format!("{path}[{i}]");
                if let Value::Object(_) = x {
                    match plain(x) {
                        Some(pv) => {
                            report.push(format!("{p}: {} → {}", x.type_name(), describe(&pv)));
                            *x = pv;
                        }
                        None => {
                            report.push(format!(
                                "{p}: replaced {} by None (no plain equivalent)",
                                x.type_name()
                            ));
                            *x = Value::None;
                        }
                    }
                }
                sanitize(x, &p, report);
            }
        }
        _ => {}
    }
}

fn join(path: &str, k: &Value) -> String {
    let k = k
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("{k:?}"));
    if path.is_empty() {
        k
    } else {
        format!("{path}.{k}")
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Float(f) => format!("float {f}"),
        Value::Int(i) => format!("int {i}"),
        Value::Bool(b) => format!("bool {b}"),
        Value::Dict(d) => format!("dict of its {} fields", d.len()),
        other => other.type_name().to_string(),
    }
}

/// The lossless plain value of an inert object, when there is one.
pub fn plain(v: &Value) -> Option<Value> {
    let Value::Object(o) = v else { return None };
    match o.class.as_str() {
        "argparse.Namespace" | "types.SimpleNamespace" => {
            let fields = o.state.as_deref()?.as_dict()?.clone();
            Some(Value::Dict(Dict {
                kind: DictKind::Plain,
                ..fields
            }))
        }
        c if c.ends_with("multiarray.scalar") => numpy_scalar(&o.args),
        _ => None,
    }
}

/// `numpy.core.multiarray.scalar(dtype, raw_bytes)` → a Python number.
fn numpy_scalar(args: &[Value]) -> Option<Value> {
    let Value::Object(dtype) = args.first()? else {
        return None;
    };
    let code = dtype.args.first()?.as_str()?;
    let Value::Bytes(raw) = args.get(1)? else {
        return None;
    };
    let le = |n: usize| -> Option<[u8; 8]> {
        let mut b = [0u8; 8];
        b[..n].copy_from_slice(raw.get(..n)?);
        Some(b)
    };
    Some(match code {
        "f8" => Value::Float(f64::from_le_bytes(le(8)?)),
        "f4" => Value::Float(f32::from_le_bytes(raw.get(..4)?.try_into().ok()?) as f64),
        "i8" => Value::Int(i64::from_le_bytes(le(8)?)),
        "i4" => Value::Int(i32::from_le_bytes(raw.get(..4)?.try_into().ok()?) as i64),
        "b1" => Value::Bool(*raw.first()? != 0),
        "u1" => Value::Int(*raw.first()? as i64),
        _ => return None,
    })
}
