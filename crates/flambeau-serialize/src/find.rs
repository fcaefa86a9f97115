//! Finding the model's state dict inside the layouts people save.

use flambeau_core::{Dict, StateDict, Value};

use crate::{Error, Result};

/// Keys under which training scripts keep the model's weights, in the order they are tried.
pub const STATE_DICT_KEYS: &[&str] = &[
    "state_dict",
    "model_state_dict",
    "model",
    "net",
    "module",
    "network",
];

/// A state dict and where it was found.
#[derive(Debug, Clone)]
pub struct FoundStateDict {
    /// The tensors.
    pub state_dict: StateDict,
    /// Where in the file: `""` for the top level, else the key (`"model_state_dict"`).
    pub location: String,
    /// What the file looked like (for messages).
    pub layout: &'static str,
}

fn is_tensor_dict(d: &Dict) -> bool {
    !d.is_empty()
        && d.entries
            .iter()
            .all(|(k, v)| k.as_str().is_some() && v.is_tensor())
}

/// Looks for the state dict: a bare dict of tensors, one under a common key (`state_dict`,
/// `model_state_dict`, `model`, `net`, `module`), or the parameters and buffers of a whole
/// pickled `nn.Module` (`torch.save(model)`), at the top level or under those keys.
pub fn find_state_dict(value: &Value) -> Result<FoundStateDict> {
    match value {
        Value::Dict(d) if is_tensor_dict(d) => {
            return Ok(FoundStateDict {
                state_dict: StateDict::from_value(value)?,
                location: String::new(),
                layout: "a bare state_dict",
            })
        }
        Value::Object(_) => {
            if let Some(sd) = state_dict_from_module(value) {
                return Ok(FoundStateDict {
                    state_dict: sd,
                    location: String::new(),
                    layout: "a whole pickled nn.Module (torch.save(model))",
                });
            }
        }
        Value::Dict(d) => {
            for key in STATE_DICT_KEYS {
                match d.get(key) {
                    Some(inner @ Value::Dict(id)) if is_tensor_dict(id) => {
                        return Ok(FoundStateDict {
                            state_dict: StateDict::from_value(inner)?,
                            location: key.to_string(),
                            layout: "a training checkpoint",
                        })
                    }
                    Some(inner @ Value::Object(_)) => {
                        if let Some(sd) = state_dict_from_module(inner) {
                            return Ok(FoundStateDict {
                                state_dict: sd,
                                location: key.to_string(),
                                layout: "a training checkpoint holding a whole pickled nn.Module",
                            });
                        }
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
    let described = match value {
        Value::Dict(d) => {
            let keys: Vec<String> = d
                .entries
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{} ({})",
                        k.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| format!("{k:?}")),
                        v.type_name()
                    )
                })
                .collect();
            format!("a dict with top-level keys: {}", keys.join(", "))
        }
        other => format!("a {}", other.type_name()),
    };
    Err(Error::NoStateDict(format!(
        "no state_dict found: the file holds {described}. Expected a dict of tensors, or one under {}; pick the entry with `flambeau convert --select KEY`",
        STATE_DICT_KEYS.join("/")
    )))
}

/// The state dict of a whole pickled `nn.Module`, rebuilt from its `_parameters`, `_buffers`
/// (minus `_non_persistent_buffers_set`) and `_modules`, in PyTorch's order. `None` when the
/// object is not a module.
pub fn state_dict_from_module(module: &Value) -> Option<StateDict> {
    let mut sd = StateDict::new();
    collect(module, "", &mut sd)?;
    Some(sd)
}

fn collect(module: &Value, prefix: &str, sd: &mut StateDict) -> Option<()> {
    let Value::Object(o) = module else {
        return None;
    };
    let state = o.state.as_deref()?;
    let params = state.get("_parameters")?.as_dict()?;
    let buffers = state.get("_buffers").and_then(Value::as_dict);
    let modules = state.get("_modules").and_then(Value::as_dict);
    let non_persistent: Vec<&str> = match state.get("_non_persistent_buffers_set") {
        Some(Value::Set(s)) => s.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let mut put = |k: &str, v: &Value| match v {
        Value::Tensor(t) => {
            sd.insert(format!("{prefix}{k}"), t.clone());
        }
        Value::RawTensor(r) => sd.insert_raw(format!("{prefix}{k}"), r.clone()),
        _ => {}
    };
    for (k, v) in &params.entries {
        if let Some(k) = k.as_str() {
            put(k, v);
        }
    }
    for (k, v) in buffers.map(|b| &b.entries[..]).unwrap_or(&[]) {
        if let Some(k) = k.as_str() {
            if !non_persistent.contains(&k) {
                put(k, v);
            }
        }
    }
    for (k, child) in modules.map(|m| &m.entries[..]).unwrap_or(&[]) {
        if let (Some(k), Value::Object(_)) = (k.as_str(), child) {
            collect(child, &format!("{prefix}{k}."), sd)?;
        }
    }
    Some(())
}
