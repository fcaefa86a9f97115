//! What a checkpoint holds, for people reading it (`flambeau inspect`): what kind of file it
//! looks like ([`summary`]), every tensor with its dtype, shape and optional statistics
//! ([`tensors`]), and the whole object tree ([`tree`], printed with `Display`), with tensors
//! that share a storage, quantization parameters and inert objects pointed out.
//!
//! ```
//! use flambeau_serialize::inspect;
//! use flambeau_serialize::{Dict, DictKind, Value};
//! use candle_core::{Device, Tensor};
//!
//! # fn main() -> flambeau_serialize::Result<()> {
//! let mut d = Dict::new(DictKind::Ordered);
//! d.insert("w", Value::Tensor(Tensor::ones((2, 3), candle_core::DType::F32, &Device::Cpu)?));
//! let v = Value::Dict(d);
//! assert_eq!(inspect::tensors(&v, true)?[0].stats.unwrap().sum, 6.0);
//! assert_eq!(inspect::tree(&v, false)?.to_string(), "OrderedDict\n└─ w: float32 [2, 3] 24 B\n");
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::fmt;

use candle_core::{CpuStorage, DType, Storage, Tensor};
use flambeau_core::diff::torch_dtype_name;
use flambeau_core::{Quantizer, RawData, RawTensor, Value};

use crate::{find_state_dict, Result};

/// A byte count in B, KiB, MiB or GiB (`432 B`, `44.7 MiB`).
pub fn human_size(bytes: usize) -> String {
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

/// Every tensor value (candle or raw) under `v` with its dotted key path (`model.fc.weight`,
/// `groups[0]`), in file order.
pub fn tensor_values(v: &Value) -> Vec<(String, &Value)> {
    fn walk<'a>(v: &'a Value, path: &str, out: &mut Vec<(String, &'a Value)>) {
        match v {
            Value::Tensor(_) | Value::RawTensor(_) => out.push((path.to_string(), v)),
            Value::Dict(d) => {
                for (k, x) in &d.entries {
                    let k = key_name(k);
                    let path = if path.is_empty() {
                        k
                    } else {
                        format!("{path}.{k}")
                    };
                    walk(x, &path, out);
                }
            }
            Value::List(items) | Value::Tuple(items) => {
                for (i, x) in items.iter().enumerate() {
                    walk(x, &format!("{path}[{i}]"), out);
                }
            }
            Value::Object(o) => {
                if let Some(s) = &o.state {
                    walk(s, path, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(v, "", &mut out);
    out
}

/// What kind of file this looks like, in one line: the layout of its model state dict (or
/// DataParallel's `module.` keys, and the fix), its tensor count and total size.
pub fn summary(v: &Value) -> String {
    let all = tensor_values(v);
    let bytes: usize = all.iter().map(|(_, t)| nbytes(t)).sum();
    let kind = match find_state_dict(v) {
        Ok(found) if found.location.is_empty() && found.state_dict.wrapper_prefixes().first() == Some(&"module.") => {
            "a DataParallel/DistributedDataParallel state_dict (every key starts with `module.`; load with KeyRule::strip_prefix(\"module.\"))".to_string()
        }
        Ok(found) if found.location.is_empty() => found.layout.to_string(),
        Ok(found) => format!("{} (model under '{}', {} tensors)", found.layout, found.location, found.state_dict.len()),
        Err(_) => "no model state_dict found".to_string(),
    };
    format!("{kind}; {} tensors, {}", all.len(), human_size(bytes))
}

/// Minimum, maximum, mean and sum of a tensor's values, computed in f64 (NaN for an empty
/// tensor).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    /// The smallest value.
    pub min: f64,
    /// The largest value.
    pub max: f64,
    /// The mean.
    pub mean: f64,
    /// The sum.
    pub sum: f64,
}

impl Stats {
    /// Statistics of `values`.
    pub fn of(values: &[f64]) -> Self {
        if values.is_empty() {
            let nan = f64::NAN;
            return Self {
                min: nan,
                max: nan,
                mean: nan,
                sum: nan,
            };
        }
        let sum: f64 = values.iter().sum();
        Self {
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            mean: sum / values.len() as f64,
            sum,
        }
    }

    /// Statistics of a tensor.
    pub fn of_tensor(t: &Tensor) -> Result<Self> {
        Ok(Self::of(&f64_values(t)?))
    }

    /// Statistics of a raw tensor, when it has one real number per element (not complex,
    /// sparse or per-channel quantized).
    pub fn of_raw(t: &RawTensor) -> Result<Option<Self>> {
        match t.to_f64_vec() {
            Some(v) => Ok(Some(Self::of(&v?))),
            None => Ok(None),
        }
    }
}

impl fmt::Display for Stats {
    /// `min … max … mean … sum …` with six decimals.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "min {:.6} max {:.6} mean {:.6} sum {:.6}",
            self.min, self.max, self.mean, self.sum
        )
    }
}

/// The values of a tensor as f64, row-major. float8_e4m3fn is decoded element by element:
/// candle's own conversion of it is pathologically slow (a 6-element tensor took minutes).
fn f64_values(t: &Tensor) -> Result<Vec<f64>> {
    if t.dtype() == DType::F8E4M3 {
        let t = t.to_device(&candle_core::Device::Cpu)?.contiguous()?;
        let (storage, layout) = t.storage_and_layout();
        let Storage::Cpu(CpuStorage::F8E4M3(v)) = &*storage else {
            return Err(
                candle_core::Error::Msg("float8 tensor without float8 storage".into()).into(),
            );
        };
        let start = layout.start_offset();
        return Ok(v[start..start + t.elem_count()]
            .iter()
            .map(|x| x.to_f64())
            .collect());
    }
    Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
}

/// One tensor of a file.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// Its dotted key path.
    pub key: String,
    /// PyTorch's dtype name without `torch.` (`float32`, `int8`, `qint8`).
    pub dtype: String,
    /// The shape.
    pub shape: Vec<usize>,
    /// The layout of a raw tensor (`strided`, `sparse_coo`, …); `None` for a candle tensor.
    pub layout: Option<String>,
    /// Statistics, when asked for and the values are real numbers.
    pub stats: Option<Stats>,
}

/// Every tensor under `v` (see [`tensor_values`]), with statistics when `with_stats`.
pub fn tensors(v: &Value, with_stats: bool) -> Result<Vec<TensorInfo>> {
    let mut out = Vec::new();
    for (key, t) in tensor_values(v) {
        out.push(match t {
            Value::Tensor(t) => TensorInfo {
                key,
                dtype: torch_dtype_name(t.dtype()).to_string(),
                shape: t.dims().to_vec(),
                layout: None,
                stats: with_stats.then(|| Stats::of_tensor(t)).transpose()?,
            },
            Value::RawTensor(r) => TensorInfo {
                key,
                dtype: r.dtype.clone(),
                shape: r.size.clone(),
                layout: Some(r.layout().to_string()),
                stats: if with_stats { Stats::of_raw(r)? } else { None },
            },
            _ => continue,
        });
    }
    Ok(out)
}

/// An entry of a [`Tree`]: its name under its parent, a one-line description, its entries.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Key, `[index]`, `argN` or attribute name.
    pub name: String,
    /// Type and contents in a line (`float32 [4, 3] 48 B`, `str "resnet18"`, `dict (3 entries)`).
    pub description: String,
    /// The entries of a container (empty for a leaf, and for lists of plain values, which the
    /// description shows).
    pub children: Vec<Node>,
}

/// The object tree of a file; `Display` draws it with box-drawing branches, a line per node.
#[derive(Debug, Clone, PartialEq)]
pub struct Tree {
    /// The top object's description (its type, or the line of a lone tensor).
    pub root: String,
    /// Its entries.
    pub children: Vec<Node>,
}

impl fmt::Display for Tree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn draw(f: &mut fmt::Formatter<'_>, nodes: &[Node], indent: &str) -> fmt::Result {
            for (i, n) in nodes.iter().enumerate() {
                let last = i + 1 == nodes.len();
                let branch = if last { "└─ " } else { "├─ " };
                writeln!(f, "{indent}{branch}{}: {}", n.name, n.description)?;
                let next = format!("{indent}{}", if last { "   " } else { "│  " });
                draw(f, &n.children, &next)?;
            }
            Ok(())
        }
        writeln!(f, "{}", self.root)?;
        draw(f, &self.children, "")
    }
}

/// The tree of `v`, with statistics of every tensor when `with_stats`.
pub fn tree(v: &Value, with_stats: bool) -> Result<Tree> {
    let mut b = TreeBuilder {
        stats: with_stats,
        seen: HashMap::new(),
    };
    Ok(match v {
        Value::Tensor(t) => Tree {
            root: b.tensor_line("", t)?,
            children: Vec::new(),
        },
        Value::RawTensor(t) => Tree {
            root: b.raw_line(t)?,
            children: Vec::new(),
        },
        _ => Tree {
            root: v.type_name().to_string(),
            children: b.children(v, "")?,
        },
    })
}

fn key_name(k: &Value) -> String {
    k.as_str().map(str::to_string).unwrap_or_else(|| scalar(k))
}

fn scalar(v: &Value) -> String {
    match v {
        Value::None => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
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

fn is_container_or_tensor(v: &Value) -> bool {
    matches!(
        v,
        Value::Tensor(_) | Value::RawTensor(_) | Value::Dict(_) | Value::Object(_)
    )
}

struct TreeBuilder {
    stats: bool,
    /// The first path of every candle storage seen, to point out shared storages.
    seen: HashMap<usize, String>,
}

impl TreeBuilder {
    fn tensor_line(&mut self, path: &str, t: &Tensor) -> Result<String> {
        let mut line = format!(
            "{} {:?} {}",
            torch_dtype_name(t.dtype()),
            t.dims(),
            human_size(t.elem_count() * t.dtype().size_in_bytes())
        );
        let id = {
            let (s, _) = t.storage_and_layout();
            &*s as *const _ as usize
        };
        match self.seen.get(&id) {
            Some(first) => line.push_str(&format!(" (shares storage with {first})")),
            None => {
                self.seen.insert(id, path.to_string());
            }
        }
        if self.stats {
            line.push_str(&format!(" {}", Stats::of_tensor(t)?));
        }
        Ok(line)
    }

    fn raw_line(&mut self, t: &RawTensor) -> Result<String> {
        let mut line = format!("{} {:?} {}", t.dtype, t.size, human_size(t.nbytes()));
        if t.layout() != "strided" {
            line.push_str(&format!(" ({})", t.layout()));
        }
        if let RawData::Quantized { quantizer, .. } = &t.data {
            match quantizer {
                Quantizer::PerTensor { scale, zero_point } => {
                    line.push_str(&format!(" scale {scale} zero_point {zero_point}"))
                }
                Quantizer::PerChannel { scheme, axis, .. } => {
                    line.push_str(&format!(" {scheme} axis {axis}"))
                }
            }
        }
        if self.stats {
            if let Some(s) = Stats::of_raw(t)? {
                line.push_str(&format!(" {s}"));
            }
        }
        Ok(line)
    }

    fn children(&mut self, v: &Value, path: &str) -> Result<Vec<Node>> {
        let entries: Vec<(String, &Value)> = match v {
            Value::Dict(d) => d.entries.iter().map(|(k, x)| (key_name(k), x)).collect(),
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
                match o.state.as_deref() {
                    Some(Value::Dict(d)) => c.extend(
                        d.entries
                            .iter()
                            .map(|(k, x)| (k.as_str().unwrap_or("?").to_string(), x)),
                    ),
                    Some(other) => c.push(("state".into(), other)),
                    None => {}
                }
                c
            }
            _ => Vec::new(),
        };
        let mut nodes = Vec::with_capacity(entries.len());
        for (name, x) in entries {
            let child_path = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            let description = match x {
                Value::Tensor(t) => self.tensor_line(&child_path, t)?,
                Value::RawTensor(t) => self.raw_line(t)?,
                Value::Dict(d) => format!("{} ({} entries)", x.type_name(), d.len()),
                Value::List(l) | Value::Tuple(l) | Value::Set(l)
                    if !l.iter().any(is_container_or_tensor) && l.len() <= 8 =>
                {
                    let items: Vec<String> = l.iter().map(scalar).collect();
                    format!("{} {}", x.type_name(), items.join(", "))
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
            let expandable = match x {
                Value::Dict(_) | Value::Object(_) => true,
                Value::List(l) | Value::Tuple(l) | Value::Set(l) => {
                    l.iter().any(is_container_or_tensor)
                }
                _ => false,
            };
            let children = if expandable {
                self.children(x, &child_path)?
            } else {
                Vec::new()
            };
            nodes.push(Node {
                name,
                description,
                children,
            });
        }
        Ok(nodes)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;
    use flambeau_core::{Dict, DictKind, Object};

    use super::*;

    fn tensor(v: &[f32]) -> Tensor {
        Tensor::new(v, &Device::Cpu).unwrap()
    }

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(human_size(432), "432 B");
        assert_eq!(human_size(2048), "2.0 KiB");
        assert_eq!(human_size(3 << 30), "3.0 GiB");
    }

    #[test]
    fn stats_of_values_and_of_nothing() {
        let s = Stats::of(&[1.0, -2.0, 4.0]);
        assert_eq!((s.min, s.max, s.sum), (-2.0, 4.0, 3.0));
        assert_eq!(s.mean, 1.0);
        assert!(Stats::of(&[]).sum.is_nan());
        assert_eq!(
            s.to_string(),
            "min -2.000000 max 4.000000 mean 1.000000 sum 3.000000"
        );
    }

    /// A training checkpoint: a model dict with a tied tensor, an epoch, an inert object.
    fn training_checkpoint() -> Value {
        let w = tensor(&[1.0, 2.0, 3.0]);
        let mut model = Dict::new(DictKind::Ordered);
        model.insert("a", Value::Tensor(w.clone()));
        model.insert("b", Value::Tensor(w));
        let mut top = Dict::new(DictKind::Plain);
        top.insert("model_state_dict", Value::Dict(model));
        top.insert("epoch", 4i64);
        top.insert(
            "milestones",
            Value::List(vec![Value::Int(2), Value::Int(3)]),
        );
        let o = Object {
            class: "argparse.Namespace".into(),
            args: Vec::new(),
            state: Some(Box::new(Value::Dict(Dict::new(DictKind::Plain)))),
        };
        top.insert("args", Value::Object(o));
        Value::Dict(top)
    }

    #[test]
    fn summary_names_the_layout_and_the_size() {
        let s = summary(&training_checkpoint());
        assert!(
            s.contains("(model under 'model_state_dict', 2 tensors)"),
            "{s}"
        );
        assert!(s.ends_with("; 2 tensors, 24 B"), "{s}");
        let mut dp = Dict::new(DictKind::Ordered);
        dp.insert("module.w", Value::Tensor(tensor(&[1.0])));
        assert!(summary(&Value::Dict(dp)).contains("DataParallel"));
    }

    #[test]
    fn tensors_have_paths_and_stats() {
        let t = tensors(&training_checkpoint(), true).unwrap();
        let keys: Vec<&str> = t.iter().map(|t| t.key.as_str()).collect();
        assert_eq!(keys, ["model_state_dict.a", "model_state_dict.b"]);
        assert_eq!(t[0].dtype, "float32");
        assert_eq!(t[0].shape, [3]);
        assert_eq!(t[0].stats.unwrap().max, 3.0);
        assert!(tensors(&training_checkpoint(), false).unwrap()[0]
            .stats
            .is_none());
    }

    #[test]
    fn the_tree_draws_every_entry() {
        let text = tree(&training_checkpoint(), false).unwrap().to_string();
        let expected = [
            "dict",
            "├─ model_state_dict: OrderedDict (2 entries)",
            "│  ├─ a: float32 [3] 12 B",
            "│  └─ b: float32 [3] 12 B (shares storage with model_state_dict.a)",
            "├─ epoch: int 4",
            "├─ milestones: list 2, 3",
            "└─ args: argparse.Namespace (inert object: not executed; torch.load's weights_only refuses it)",
        ];
        assert_eq!(text, expected.join("\n") + "\n");
        let lone = tree(&Value::Tensor(tensor(&[2.0])), true).unwrap();
        assert_eq!(
            lone.to_string(),
            "float32 [1] 4 B min 2.000000 max 2.000000 mean 2.000000 sum 2.000000\n"
        );
    }
}
