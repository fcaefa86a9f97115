//! `flambeau inspect FILE`: the tree of a checkpoint, and what kind of file it looks like.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{CpuStorage, DType, Storage, Tensor};
use flambeau_core::diff::torch_dtype_name;
use flambeau_core::{RawTensor, Value};
use flambeau_serialize::{find_state_dict, LoadConfig};

/// Reads any file flambeau opens — `.pth` (any torch.save format), `.safetensors`, a sharded
/// checkpoint (index JSON, a shard or their directory), a TorchScript archive — as a value tree.
pub fn read(path: &Path) -> Result<Value> {
    flambeau_serialize::open(path, &LoadConfig::default())
        .with_context(|| format!("reading {}", path.display()))
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

/// Bytes a tensor value takes (a raw tensor: its storage).
fn nbytes(v: &Value) -> usize {
    match v {
        Value::Tensor(t) => t.elem_count() * t.dtype().size_in_bytes(),
        Value::RawTensor(r) => r.nbytes(),
        _ => 0,
    }
}

fn storage_id(t: &Tensor) -> usize {
    let (s, _) = t.storage_and_layout();
    &*s as *const _ as usize
}

/// Every tensor (candle or raw) with its dotted key path, in file order.
pub fn tensors(v: &Value, path: &str, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Tensor(_) | Value::RawTensor(_) => out.push((path.to_string(), v.clone())),
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
    let all: Vec<(String, Value)> = {
        let mut t = Vec::new();
        tensors(v, "", &mut t);
        t
    };
    let bytes: usize = all.iter().map(|(_, t)| nbytes(t)).sum();
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
            torch_dtype_name(t.dtype()),
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

    fn raw_line(&mut self, t: &RawTensor) -> Result<String> {
        let mut line = format!("{} {:?} {}", t.dtype, t.size, human(t.nbytes()));
        if t.layout() != "strided" {
            line.push_str(&format!(" ({})", t.layout()));
        }
        match &t.data {
            flambeau_core::RawData::Quantized {
                quantizer: flambeau_core::Quantizer::PerTensor { scale, zero_point },
                ..
            } => line.push_str(&format!(" scale {scale} zero_point {zero_point}")),
            flambeau_core::RawData::Quantized {
                quantizer: flambeau_core::Quantizer::PerChannel { scheme, axis, .. },
                ..
            } => line.push_str(&format!(" {scheme} axis {axis}")),
            _ => {}
        }
        if self.stats {
            if let Some(s) = raw_stats(t)? {
                line.push_str(&format!(
                    " min {:.6} max {:.6} mean {:.6} sum {:.6}",
                    s[0], s[1], s[2], s[3]
                ));
            }
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
                Value::RawTensor(t) => self.raw_line(t)?,
                Value::Dict(d) => format!("{} ({} entries)", x.type_name(), d.len()),
                Value::List(l) | Value::Tuple(l) | Value::Set(l)
                    if l.iter().all(|e| {
                        !matches!(
                            e,
                            Value::Tensor(_)
                                | Value::RawTensor(_)
                                | Value::Dict(_)
                                | Value::Object(_)
                        )
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
                || matches!(x, Value::List(l) | Value::Tuple(l) | Value::Set(l) if l.iter().any(|e| matches!(e, Value::Tensor(_) | Value::RawTensor(_) | Value::Dict(_) | Value::Object(_))));
            if expandable {
                let next = format!("{indent}{}", if last { "   " } else { "│  " });
                self.node(x, &child_path, &next, out)?;
            }
        }
        Ok(())
    }
}

/// The values of a tensor as f64, row-major. float8_e4m3fn is decoded element by element:
/// candle's own conversion of it is pathologically slow (a 6-element tensor took minutes).
fn f64_values(t: &Tensor) -> Result<Vec<f64>> {
    if t.dtype() == DType::F8E4M3 {
        let t = t.to_device(&candle_core::Device::Cpu)?.contiguous()?;
        let (storage, layout) = t.storage_and_layout();
        let Storage::Cpu(CpuStorage::F8E4M3(v)) = &*storage else {
            anyhow::bail!("float8 tensor without float8 storage");
        };
        let start = layout.start_offset();
        return Ok(v[start..start + t.elem_count()]
            .iter()
            .map(|x| x.to_f64())
            .collect());
    }
    Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
}

/// `[min, max, mean, sum]` of values.
fn summarize(v: &[f64]) -> [f64; 4] {
    if v.is_empty() {
        return [f64::NAN; 4];
    }
    let sum: f64 = v.iter().sum();
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    [min, max, sum / v.len() as f64, sum]
}

/// `[min, max, mean, sum]` in f64.
fn stats(t: &Tensor) -> Result<[f64; 4]> {
    Ok(summarize(&f64_values(t)?))
}

/// Statistics of a raw tensor, when it has one real number per element (not complex, sparse
/// or per-channel quantized).
fn raw_stats(t: &RawTensor) -> Result<Option<[f64; 4]>> {
    match t.to_f64_vec() {
        Some(v) => Ok(Some(summarize(&v?))),
        None => Ok(None),
    }
}

/// The `inspect` command.
pub fn run(path: &Path, json: bool, with_stats: bool) -> Result<()> {
    let opened = flambeau_serialize::open_file(path, &LoadConfig::default())
        .with_context(|| format!("reading {}", path.display()))?;
    let v = opened.value;
    if json {
        let mut all = Vec::new();
        tensors(&v, "", &mut all);
        for (key, t) in all {
            let (mut o, s) = match &t {
                Value::Tensor(t) => (
                    serde_json::json!({"key": key, "dtype": torch_dtype_name(t.dtype()), "shape": t.dims()}),
                    if with_stats { Some(stats(t)?) } else { None },
                ),
                Value::RawTensor(r) => (
                    serde_json::json!({"key": key, "dtype": r.dtype, "shape": r.size, "layout": r.layout()}),
                    if with_stats { raw_stats(r)? } else { None },
                ),
                _ => continue,
            };
            if let Some(s) = s {
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
    println!("format: {}", opened.format);
    let mut out = format!("{}\n", v.type_name());
    let mut p = Printer {
        stats: with_stats,
        seen: HashMap::new(),
    };
    if let Value::Tensor(t) = &v {
        out = format!("{}\n", p.tensor_line("", t)?);
    } else if let Value::RawTensor(t) = &v {
        out = format!("{}\n", p.raw_line(t)?);
    } else {
        p.node(&v, "", "", &mut out)?;
    }
    print!("{out}");
    Ok(())
}
