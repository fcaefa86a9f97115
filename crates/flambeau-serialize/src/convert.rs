//! [`convert`]: a checkpoint written again as a `.pth` that `torch.load` opens with its
//! defaults, as `.safetensors`, or as safetensors shards — with key rules, a floating-point
//! cast and the selection of one top-level entry on the way (`flambeau convert`).

use std::path::{Path, PathBuf};

use candle_core::DType;
use flambeau_core::{KeyRule, StateDict, Value};

use crate::sanitize::sanitize;
use crate::{find_state_dict, state_dict_from_module, Error, Result};

/// What to change on the way.
#[derive(Debug, Clone, Default)]
pub struct ConvertOptions {
    /// Keep only this top-level entry (e.g. `model_state_dict` of a training checkpoint).
    pub select: Option<String>,
    /// Key rules applied to the model's state dict, in order.
    pub rules: Vec<KeyRule>,
    /// Cast the floating-point tensors of the state dict to this dtype.
    pub dtype: Option<DType>,
    /// Write the state dict as safetensors shards of at most this many bytes, plus an index
    /// (see [`crate::sharded::save`]).
    pub max_shard_size: Option<u64>,
}

/// What [`convert`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// A zip `.pth` of the whole (sanitized) object.
    Pth,
    /// The model's state dict as one `.safetensors` file, with this many tensors.
    Safetensors {
        /// Tensors written.
        tensors: usize,
    },
    /// The model's state dict as shards and their index.
    Shards {
        /// Tensors written.
        tensors: usize,
        /// The files, shards first and the index last.
        files: Vec<PathBuf>,
    },
}

/// What [`convert`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Converted {
    /// A whole pickled `nn.Module` replaced by its state dict: its class and tensor count.
    pub unwrapped_module: Option<(String, usize)>,
    /// Objects `torch.load`'s default loader would refuse, converted or dropped (`.pth` output
    /// only): a line each (see [`crate::sanitize`]).
    pub sanitized: Vec<String>,
    /// The output.
    pub written: Written,
}

/// The floating-point dtype a name means: PyTorch's (`float32`, `float16`, `bfloat16`,
/// `float64`), its aliases (`float`, `half`, `double`) or candle's (`f32`, `bf16`, …).
pub fn float_dtype(name: &str) -> Option<DType> {
    Some(match name {
        "float32" | "f32" | "float" => DType::F32,
        "float16" | "f16" | "half" => DType::F16,
        "bfloat16" | "bf16" => DType::BF16,
        "float64" | "f64" | "double" => DType::F64,
        _ => return None,
    })
}

/// Applies `rules` and the cast to a state dict; tensors candle cannot hold (int8, quantized,
/// …) follow their keys unchanged. A rule that maps two keys onto one is an error.
pub fn fix_state_dict(
    sd: &StateDict,
    rules: &[KeyRule],
    dtype: Option<DType>,
) -> Result<StateDict> {
    Ok(sd.map_keeping_raw(|sd| {
        let mut sd = sd.clone();
        for rule in rules {
            sd = rule.apply(&sd, &[])?;
        }
        if let Some(d) = dtype {
            sd = sd.to_dtype(d)?;
        }
        Ok(sd)
    })?)
}

/// Writes `v` (a file's contents, see [`crate::open`]) to `output`: with
/// [`ConvertOptions::max_shard_size`], its model state dict as shards; to a `.safetensors`
/// path, its model state dict; anything else, a zip `.pth` of the whole object, sanitized so
/// that `torch.load`'s defaults accept it. A whole pickled `nn.Module` becomes its state dict.
pub fn convert(mut v: Value, output: &Path, opts: &ConvertOptions) -> Result<Converted> {
    if let Some(key) = &opts.select {
        let Some(entry) = v.get(key) else {
            let available = v
                .as_dict()
                .map(|d| d.str_keys().map(String::from).collect())
                .unwrap_or_default();
            return Err(Error::NoSuchEntry {
                key: key.clone(),
                available,
            });
        };
        v = entry.clone();
    }
    let mut unwrapped_module = None;
    if let (Value::Object(o), Some(sd)) = (&v, state_dict_from_module(&v)) {
        unwrapped_module = Some((o.class.clone(), sd.len()));
        v = sd.to_value();
    }
    let fixed = || -> Result<StateDict> {
        fix_state_dict(&find_state_dict(&v)?.state_dict, &opts.rules, opts.dtype)
    };
    let written = if let Some(max) = opts.max_shard_size {
        let sd = fixed()?;
        let files = crate::sharded::save(&sd, output, max)?;
        Written::Shards {
            tensors: sd.len(),
            files,
        }
    } else if output.extension().is_some_and(|e| e == "safetensors") {
        let sd = fixed()?;
        crate::safetensors::save(&sd, output)?;
        Written::Safetensors { tensors: sd.len() }
    } else {
        Written::Pth
    };
    let mut sanitized = Vec::new();
    if written == Written::Pth {
        sanitize(&mut v, "", &mut sanitized);
        if !opts.rules.is_empty() || opts.dtype.is_some() {
            let found = find_state_dict(&v)?;
            let fixed = fix_state_dict(&found.state_dict, &opts.rules, opts.dtype)?.to_value();
            if found.location.is_empty() {
                v = fixed;
            } else if let Some(d) = v.as_dict_mut() {
                d.insert(found.location.as_str(), fixed);
            }
        }
        crate::save(&v, output)?;
    }
    Ok(Converted {
        unwrapped_module,
        sanitized,
        written,
    })
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};
    use flambeau_core::{Dict, DictKind};

    use super::*;
    use crate::LoadConfig;

    fn checkpoint() -> Value {
        let mut sd = StateDict::new();
        sd.insert(
            "module.fc.weight",
            Tensor::ones((2, 2), DType::F32, &Device::Cpu).unwrap(),
        );
        let mut top = Dict::new(DictKind::Plain);
        top.insert("epoch", 3i64);
        top.insert("model_state_dict", sd.to_value());
        Value::Dict(top)
    }

    #[test]
    fn dtype_names() {
        assert_eq!(float_dtype("half"), Some(DType::F16));
        assert_eq!(float_dtype("bfloat16"), Some(DType::BF16));
        assert_eq!(float_dtype("int8"), None);
    }

    #[test]
    fn pth_output_fixes_the_model_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.pth");
        let opts = ConvertOptions {
            rules: vec![KeyRule::strip_prefix("module.")],
            dtype: Some(DType::F16),
            ..Default::default()
        };
        let c = convert(checkpoint(), &out, &opts).unwrap();
        assert_eq!(c.written, Written::Pth);
        let v = crate::open(&out, &LoadConfig::default()).unwrap();
        assert_eq!(v.get("epoch").and_then(Value::as_i64), Some(3));
        let sd = find_state_dict(&v).unwrap().state_dict;
        assert_eq!(sd.keys().collect::<Vec<_>>(), ["fc.weight"]);
        assert_eq!(sd.get("fc.weight").unwrap().dtype(), DType::F16);
    }

    #[test]
    fn safetensors_and_shards_hold_the_selected_state_dict() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("m.safetensors");
        let opts = ConvertOptions {
            select: Some("model_state_dict".into()),
            ..Default::default()
        };
        let c = convert(checkpoint(), &out, &opts).unwrap();
        assert_eq!(c.written, Written::Safetensors { tensors: 1 });
        let sharded = ConvertOptions {
            max_shard_size: Some(1 << 20),
            ..opts
        };
        let c = convert(checkpoint(), &dir.path().join("s.safetensors"), &sharded).unwrap();
        match &c.written {
            Written::Shards { tensors: 1, files } => {
                assert!(files.iter().all(|f| f.exists()), "{files:?}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn selecting_a_missing_entry_lists_the_others() {
        let opts = ConvertOptions {
            select: Some("state_dict".into()),
            ..Default::default()
        };
        let e = convert(checkpoint(), Path::new("unused.pth"), &opts).unwrap_err();
        assert!(
            e.to_string()
                .contains("(the file has: epoch, model_state_dict)"),
            "{e}"
        );
    }
}
