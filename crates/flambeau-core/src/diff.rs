//! [`diff`]: how two state dicts differ — keys on one side only, shapes, dtypes, and how far
//! apart the values of the common tensors are — with the key rule that maps one onto the other
//! when there is one (B = A with `module.` stripped).

use candle_core::{DType, Tensor};

use crate::keys::KeyRule;
use crate::load::find_prefix;
use crate::{Result, StateDict, Value};

/// PyTorch's name of a candle dtype (`float32`, `int64`, …).
pub fn torch_dtype_name(d: DType) -> &'static str {
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
        DType::F8E4M3 => "float8_e4m3fn",
        _ => "other",
    }
}

/// A tensor's shape and PyTorch dtype name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// The shape.
    pub shape: Vec<usize>,
    /// PyTorch's dtype name (`float32`, `int8`, `qint8`, …).
    pub dtype: String,
}

impl TensorSpec {
    fn of(v: &Value) -> Option<Self> {
        match v {
            Value::Tensor(t) => Some(Self {
                shape: t.dims().to_vec(),
                dtype: torch_dtype_name(t.dtype()).to_string(),
            }),
            Value::RawTensor(r) => Some(Self {
                shape: r.size.clone(),
                dtype: r.dtype.clone(),
            }),
            _ => None,
        }
    }
}

/// A key both sides have whose shape or dtype differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecDiff {
    /// The key (B's name).
    pub key: String,
    /// In A.
    pub a: TensorSpec,
    /// In B.
    pub b: TensorSpec,
}

/// How far apart the values of one common tensor are.
#[derive(Debug, Clone, PartialEq)]
pub struct ValueDiff {
    /// The key (B's name).
    pub key: String,
    /// `max |a - b|` over the elements, computed in f64 (NaN against NaN counts as equal, NaN
    /// against a number as infinitely far).
    pub max_abs: f64,
    /// `max_abs` relative to the larger of the two tensors' largest magnitudes (0 when both are
    /// all zeros): 1e-3 is float16 rounding, 1 is another tensor.
    pub max_rel: f64,
}

/// Everything [`diff`] found.
#[derive(Debug, Clone, Default)]
pub struct StateDictDiff {
    /// The key rule that maps A's keys onto B's (`KeyRule::strip_prefix("module.")`), when one
    /// explains the key differences; the comparisons below are made after applying it.
    pub rule: Option<KeyRule>,
    /// What produces the rule's prefix, in the user's terms (DataParallel, torch.compile, …).
    pub rule_cause: Option<String>,
    /// Keys only A has (after the rule), in A's order.
    pub only_in_a: Vec<String>,
    /// Keys only B has, in B's order.
    pub only_in_b: Vec<String>,
    /// Common keys whose shapes differ.
    pub shape_differs: Vec<SpecDiff>,
    /// Common keys with the same shape and different dtypes (their values are still compared).
    pub dtype_differs: Vec<SpecDiff>,
    /// Every common key with the same shape whose values could be compared, in B's order.
    pub values: Vec<ValueDiff>,
    /// Common keys whose values could not be compared (sparse tensors), with the reason.
    pub not_compared: Vec<(String, String)>,
}

impl StateDictDiff {
    /// True when both sides have the same keys, shapes, dtypes and values (after the rule).
    pub fn identical(&self) -> bool {
        self.only_in_a.is_empty()
            && self.only_in_b.is_empty()
            && self.shape_differs.is_empty()
            && self.dtype_differs.is_empty()
            && self.not_compared.is_empty()
            && self.values.iter().all(|v| v.max_abs == 0.0)
    }

    /// The largest `max_abs` over the compared tensors (0 when none differ).
    pub fn max_abs(&self) -> f64 {
        self.values.iter().map(|v| v.max_abs).fold(0.0, f64::max)
    }

    /// The common tensors whose values differ.
    pub fn changed(&self) -> impl Iterator<Item = &ValueDiff> {
        self.values.iter().filter(|v| v.max_abs != 0.0)
    }
}

/// Compares two state dicts. When A's and B's keys differ by a wrapper prefix (DataParallel's
/// `module.`, torch.compile's `_orig_mod.`, Lightning's `model.`, …), the rule is found by the
/// same detector `load_state_dict`'s diagnosis uses, applied to A, and reported.
pub fn diff(a: &StateDict, b: &StateDict) -> Result<StateDictDiff> {
    let mut out = StateDictDiff::default();
    let only = |x: &StateDict, y: &StateDict| -> Vec<String> {
        x.keys()
            .filter(|k| !y.contains_key(k))
            .map(str::to_string)
            .collect()
    };
    let (only_a, only_b) = (only(a, b), only(b, a));
    let mut a = a.clone();
    if let Some(m) = find_prefix(&only_b, &[], &only_a) {
        let rule = m.rule();
        let b_keys: Vec<String> = b.keys().map(str::to_string).collect();
        // A rule that would fold two keys onto one is no mapping: keep the keys as they are.
        if let Ok(mapped) = a.map_keeping_raw(|sd| rule.apply(sd, &b_keys)) {
            a = mapped;
            out.rule_cause = Some(m.cause());
            out.rule = Some(rule);
        }
    }
    out.only_in_a = only(&a, b);
    out.only_in_b = only(b, &a);

    let a_values: std::collections::HashMap<&str, Value> = a.iter_values().collect();
    for (key, vb) in b.iter_values() {
        let Some(va) = a_values.get(key) else {
            continue;
        };
        let (Some(sa), Some(sb)) = (TensorSpec::of(va), TensorSpec::of(&vb)) else {
            continue;
        };
        let spec = SpecDiff {
            key: key.to_string(),
            a: sa,
            b: sb,
        };
        if spec.a.shape != spec.b.shape {
            out.shape_differs.push(spec);
            continue;
        }
        if spec.a.dtype != spec.b.dtype {
            out.dtype_differs.push(spec);
        }
        match (values(va)?, values(&vb)?) {
            (Some(x), Some(y)) => out.values.push(compare(key, &x, &y)),
            _ => out.not_compared.push((
                key.to_string(),
                "no single real value per element (sparse, complex or per-channel quantized)"
                    .into(),
            )),
        }
    }
    Ok(out)
}

/// The elements of a tensor as f64, row-major; `None` for a sparse tensor.
fn values(v: &Value) -> Result<Option<Vec<f64>>> {
    Ok(match v {
        Value::Tensor(t) => Some(tensor_values(t)?),
        Value::RawTensor(r) => r.to_f64_vec().transpose()?,
        _ => None,
    })
}

fn tensor_values(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
}

fn compare(key: &str, a: &[f64], b: &[f64]) -> ValueDiff {
    let mut max_abs = 0.0f64;
    let mut scale = 0.0f64;
    for (&x, &y) in a.iter().zip(b) {
        let d = match (x.is_nan(), y.is_nan()) {
            (true, true) => 0.0,
            (true, false) | (false, true) => f64::INFINITY,
            _ if x == y => 0.0,
            _ => (x - y).abs(),
        };
        max_abs = max_abs.max(if d.is_nan() { f64::INFINITY } else { d });
        for v in [x, y] {
            if v.is_finite() {
                scale = scale.max(v.abs());
            }
        }
    }
    let max_rel = if max_abs == 0.0 {
        0.0
    } else if scale == 0.0 {
        f64::INFINITY
    } else {
        max_abs / scale
    };
    ValueDiff {
        key: key.to_string(),
        max_abs,
        max_rel,
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    fn sd(entries: &[(&str, &[f32])]) -> StateDict {
        let mut sd = StateDict::new();
        for (k, v) in entries {
            sd.insert(*k, Tensor::new(*v, &Device::Cpu).unwrap());
        }
        sd
    }

    #[test]
    fn finds_the_prefix_rule_and_compares_through_it() {
        let a = sd(&[("module.w", &[1.0, 2.0]), ("module.b", &[0.5])]);
        let b = sd(&[("w", &[1.0, 2.5]), ("b", &[0.5])]);
        let d = diff(&a, &b).unwrap();
        assert_eq!(d.rule, Some(KeyRule::strip_prefix("module.")));
        assert!(d.rule_cause.as_ref().unwrap().contains("DataParallel"));
        assert!(d.only_in_a.is_empty() && d.only_in_b.is_empty());
        assert_eq!(d.values.len(), 2);
        assert_eq!(d.values[0].max_abs, 0.5);
        assert_eq!(d.values[0].max_rel, 0.2);
        assert_eq!(d.changed().count(), 1);
        assert!(!d.identical());
    }

    #[test]
    fn reports_keys_shapes_and_dtypes() {
        let a = sd(&[("w", &[1.0, 2.0]), ("x", &[1.0])]);
        let mut b = sd(&[("w", &[1.0, 2.0, 3.0]), ("y", &[1.0])]);
        b.insert(
            "z",
            Tensor::new(&[1.0f64], &Device::Cpu)
                .unwrap()
                .to_dtype(DType::F16)
                .unwrap(),
        );
        let mut a2 = a.clone();
        a2.insert("z", Tensor::new(&[1.0f32], &Device::Cpu).unwrap());
        let d = diff(&a2, &b).unwrap();
        assert_eq!(d.rule, None);
        assert_eq!(d.only_in_a, ["x"]);
        assert_eq!(d.only_in_b, ["y"]);
        assert_eq!(d.shape_differs[0].key, "w");
        assert_eq!(d.shape_differs[0].b.shape, [3]);
        assert_eq!(d.dtype_differs[0].key, "z");
        assert_eq!(d.dtype_differs[0].a.dtype, "float32");
        assert_eq!(d.dtype_differs[0].b.dtype, "float16");
        assert_eq!(d.values.len(), 1);
        assert_eq!(d.values[0].max_abs, 0.0);
    }

    #[test]
    fn identical_dicts_and_nans() {
        let a = sd(&[("w", &[f32::NAN, 0.0])]);
        assert!(diff(&a, &a).unwrap().identical());
        let b = sd(&[("w", &[1.0, 0.0])]);
        let d = diff(&a, &b).unwrap();
        assert_eq!(d.max_abs(), f64::INFINITY);
    }
}
