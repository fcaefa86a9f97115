//! `flambeau inspect FILE`: the tree of a checkpoint, and what kind of file it looks like.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{DType, Tensor};
use flambeau_core::Value;
use flambeau_serialize::{find_state_dict, LoadConfig};

/// Reads `.pth` (any torch.save format) or `.safetensors` as a value tree.
pub fn read(path: &Path) -> Result<Value> {
    if path.extension().is_some_and(|e| e == "safetensors") {
        let sd = flambeau_serialize::safetensors::load(path, &candle_core::Device::Cpu)?;
        return Ok(sd.to_value());
    }
    flambeau_serialize::load(path, &LoadConfig::default())
        .with_context(|| format!("reading {}", path.display()))
}

/// PyTorch's name of a candle dtype as read.
pub fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::F64 => "float64",
        DType::F32 => "float32",
        DType::F16 => "float16",
        DType::BF16 => "bfloat16",
        DType::I64 => "int64",
        DType::I32 => "int32",
        DType::I16 => "int16",
        DType::U8 => "uint8",
        DType::U32 => "uint32",
        _ => "other",
    }
}

fn human(bytes: usize) -> String {
    let units = ["B", "KiB", "MiB", "GiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

fn storage_id(t: &Tensor) -> usize {
    let (s, _) = t.storage_and_layout();
    &*s as *const _ as usize
}

/// Every tensor with its dotted key path, in file order.
pub fn tensors(v: &Value, path: &str, out: &mut Vec<(String, Tensor)>) {
    match v {
        Value::Tensor(t) => out.push((path.to_string(), t.clone())),
        Value::Dict(d) => {
            for (k, x) in &d.entries {
                let k = k.as_str().map(str::to_string).unwrap_or_else(|| scalar(k));
                tensors(
                    x,
                    &if path.is_empty() {
                        k
                    } else {
                        format!("{path}.{k}")
                    },
                    out,
                );
            }
        }
        Value::List(items) | Value::Tuple(items) => {
            for (i, x) in items.iter().enumerate() {
                tensors(x, &format!("{path}[{i}]"), out);
            }
        }
        Value::Object(o) => {
            if let Some(s) = &o.state {
                tensors(s, path, out);
            }
        }
        _ => {}
    }
}

/// What kind of file this looks like, in one line.
pub fn summary(v: &Value) -> String {
    let all: Vec<(String, Tensor)> = {
        let mut t = Vec::new();
        tensors(v, "", &mut t);
        t
    };
    let bytes: usize = all
        .iter()
        .map(|(_, t)| t.elem_count() * t.dtype().size_in_bytes())
        .sum();
    let kind = match find_state_dict(v) {
        Ok(found) if found.location.is_empty() && found.state_dict.wrapper_prefixes().first() == Some(&"module.") => {
            "a DataParallel/DistributedDataParallel state_dict (every key starts with `module.`; load with KeyRule::strip_prefix(\"module.\"))".to_string()
        }
        Ok(found) if found.location.is_empty() => found.layout.to_string(),
        Ok(found) => format!("{} (model under '{}', {} tensors)", found.layout, found.location, found.state_dict.len()),
        Err(_) => "no model state_dict found".to_string(),
    };
    format!("{kind}; {} tensors, {}", all.len(), human(bytes))
}

fn scalar(v: &Value) -> String {
    match v {
        Value::None => "None".into(),
        Value::Bool(b) => {
            if *b {
                "True".into()
            } else {
                "False".into()
            }
        }
        Value::Int(i) => i.to_string(),
        Value::BigInt(_) => "<int wider than 64 bits>".into(),
        Value::Float(f) => format!("{f:?}"),
        Value::Str(s) => format!("{s:?}"),
        Value::Bytes(b) => format!("bytes[{}]", b.len()),
        Value::Device(d) => format!("device({d:?})"),
        Value::Dtype(d) => format!("torch.{d}"),
        other => other.type_name().to_string(),
    }
}

struct Printer {
    stats: bool,
    seen: HashMap<usize, String>,
}

impl Printer {
    fn tensor_line(&mut self, path: &str, t: &Tensor) -> Result<String> {
        let mut line = format!(
            "{} {:?} {}",
            dtype_name(t.dtype()),
            t.dims(),
            human(t.elem_count() * t.dtype().size_in_bytes())
        );
        let id = storage_id(t);
        match self.seen.get(&id) {
            Some(first) => line.push_str(&format!(" (shares storage with {first})")),
            None => {
                self.seen.insert(id, path.to_string());
            }
        }
        if self.stats {
            let s = stats(t)?;
            line.push_str(&format!(
                " min {:.6} max {:.6} mean {:.6} sum {:.6}",
                s[0], s[1], s[2], s[3]
            ));
        }
        Ok(line)
    }

    fn node(&mut self, v: &Value, path: &str, indent: &str, out: &mut String) -> Result<()> {
        let children: Vec<(String, &Value)> = match v {
            Value::Dict(d) => d
                .entries
                .iter()
                .map(|(k, x)| {
                    (
                        k.as_str().map(str::to_string).unwrap_or_else(|| scalar(k)),
                        x,
                    )
                })
                .collect(),
            Value::List(items) | Value::Tuple(items) | Value::Set(items) => items
                .iter()
                .enumerate()
                .map(|(i, x)| (format!("[{i}]"), x))
                .collect(),
            Value::Object(o) => {
                let mut c: Vec<(String, &Value)> = o
                    .args
                    .iter()
                    .enumerate()
                    .map(|(i, x)| (format!("arg{i}"), x))
                    .collect();
                if let Some(s) = &o.state {
                    match &**s {
                        Value::Dict(d) => c.extend(
                            d.entries
                                .iter()
                                .map(|(k, x)| (k.as_str().unwrap_or("?").to_string(), x)),
                        ),
                        other => c.push(("state".into(), other)),
                    }
                }
                c
            }
            _ => Vec::new(),
        };
        for (i, (name, x)) in children.iter().enumerate() {
            let last = i + 1 == children.len();
            let branch = if last { "└─ " } else { "├─ " };
            let child_path = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            let desc = match x {
                Value::Tensor(t) => self.tensor_line(&child_path, t)?,
                Value::Dict(d) => format!("{} ({} entries)", x.type_name(), d.len()),
                Value::List(l) | Value::Tuple(l) | Value::Set(l)
                    if l.iter().all(|e| {
                        !matches!(e, Value::Tensor(_) | Value::Dict(_) | Value::Object(_))
                    }) && l.len() <= 8 =>
                {
                    format!(
                        "{} {}",
                        x.type_name(),
                        l.iter().map(scalar).collect::<Vec<_>>().join(", ")
                    )
                }
                Value::List(l) | Value::Tuple(l) | Value::Set(l) => {
                    format!("{} ({} items)", x.type_name(), l.len())
                }
                Value::Object(o) => format!(
                    "{} (inert object: not executed; torch.load's weights_only refuses it)",
                    o.class
                ),
                Value::None => "None".to_string(),
                other => format!("{} {}", other.type_name(), scalar(other)),
            };
            out.push_str(&format!("{indent}{branch}{name}: {desc}\n"));
            let expandable = matches!(x, Value::Dict(_) | Value::Object(_))
                || matches!(x, Value::List(l) | Value::Tuple(l) | Value::Set(l) if l.iter().any(|e| matches!(e, Value::Tensor(_) | Value::Dict(_) | Value::Object(_))));
            if expandable {
                let next = format!("{indent}{}", if last { "   " } else { "│  " });
                self.node(x, &child_path, &next, out)?;
            }
        }
        Ok(())
    }
}

/// `[min, max, mean, sum]` in f64.
fn stats(t: &Tensor) -> Result<[f64; 4]> {
    let t = t.to_dtype(DType::F64)?.flatten_all()?;
    if t.elem_count() == 0 {
        return Ok([f64::NAN; 4]);
    }
    let sum = t.sum_all()?.to_scalar::<f64>()?;
    Ok([
        t.min(0)?.to_scalar::<f64>()?,
        t.max(0)?.to_scalar::<f64>()?,
        sum / t.elem_count() as f64,
        sum,
    ])
}

/// The `inspect` command.
pub fn run(path: &Path, json: bool, with_stats: bool) -> Result<()> {
    let v = read(path)?;
    if json {
        let mut all = Vec::new();
        tensors(&v, "", &mut all);
        for (key, t) in all {
            let mut o =
                serde_json::json!({"key": key, "dtype": dtype_name(t.dtype()), "shape": t.dims()});
            if with_stats {
                let s = stats(&t)?;
                o["min"] = s[0].into();
                o["max"] = s[1].into();
                o["mean"] = s[2].into();
                o["sum"] = s[3].into();
            }
            println!("{o}");
        }
        return Ok(());
    }
    println!("{}: {}", path.display(), summary(&v));
    let mut out = format!("{}\n", v.type_name());
    let mut p = Printer {
        stats: with_stats,
        seen: HashMap::new(),
    };
    if let Value::Tensor(t) = &v {
        out = format!("{}\n", p.tensor_line("", t)?);
    } else {
        p.node(&v, "", "", &mut out)?;
    }
    print!("{out}");
    Ok(())
}
