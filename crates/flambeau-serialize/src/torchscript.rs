//! TorchScript archives (`torch.jit.save`): the state dict `torch.jit.load(f).state_dict()`
//! returns, recovered without running any of the archive's code.
//!
//! `data.pkl` pickles the module tree as `__torch__.…` objects whose attributes are tensors,
//! submodules and plain values; which attributes are parameters and which are buffers is only
//! written in the class definitions under `code/` (`__parameters__ = ["weight", ]`). Those two
//! lines are all that is read from the code.

use std::collections::HashMap;

use flambeau_core::{StateDict, Value};

use crate::archive::zip_reader::ZipArchive;
use crate::{Error, Result};

/// A TorchScript module class: its parameter and buffer names, in declaration order.
#[derive(Debug, Default, Clone)]
struct ModuleClass {
    parameters: Vec<String>,
    buffers: Vec<String>,
}

/// The largest code file read (the class headers are at the top of much smaller files).
const MAX_CODE_FILE: usize = 64 << 20;

/// True when the archive is a TorchScript one (it has `constants.pkl` or `code/` records).
pub fn is_torchscript(zip: &ZipArchive, prefix: &str) -> bool {
    zip.find(&format!("{prefix}constants.pkl")).is_some()
        || zip
            .entries()
            .iter()
            .any(|e| e.name.starts_with(&format!("{prefix}code/")))
}

/// Parses `["a", "b", ]` into its strings.
fn names(list: &str) -> Vec<String> {
    list.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .map(|s| s.trim().trim_matches('"').trim_matches('\'').to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Reads the `class X(Module):` headers of every code file: qualified name → names.
fn module_classes(
    zip: &ZipArchive,
    data: &[u8],
    prefix: &str,
) -> Result<HashMap<String, ModuleClass>> {
    let code = format!("{prefix}code/");
    let mut classes = HashMap::new();
    for entry in zip.entries() {
        let Some(rel) = entry.name.strip_prefix(&code) else {
            continue;
        };
        let Some(module_path) = rel.strip_suffix(".py") else {
            continue;
        };
        if entry.size > MAX_CODE_FILE {
            return Err(Error::Zip(format!(
                "code file `{}` of {} bytes is larger than any TorchScript class definition",
                entry.name, entry.size
            )));
        }
        let text = zip.read(data, entry)?;
        let text = String::from_utf8_lossy(&text);
        let module = module_path.replace('/', ".");
        let mut current: Option<(String, ModuleClass)> = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("class ") {
                if let Some((name, class)) = current.take() {
                    classes.insert(name, class);
                }
                let name = rest.split(['(', ':']).next().unwrap_or("").trim();
                current = Some((format!("{module}.{name}"), ModuleClass::default()));
            } else if let Some((_, class)) = current.as_mut() {
                let line = line.trim();
                if let Some(list) = line.strip_prefix("__parameters__ =") {
                    class.parameters = names(list);
                } else if let Some(list) = line.strip_prefix("__buffers__ =") {
                    class.buffers = names(list);
                }
            }
        }
        if let Some((name, class)) = current {
            classes.insert(name, class);
        }
    }
    Ok(classes)
}

fn collect(
    module: &Value,
    prefix: &str,
    classes: &HashMap<String, ModuleClass>,
    sd: &mut StateDict,
    depth: usize,
) -> Result<()> {
    // The pickle machine already bounds nesting; this keeps a cyclic-looking tree finite too.
    if depth > 512 {
        return Err(Error::TorchScript(
            "modules nested deeper than 512 levels".into(),
        ));
    }
    let Value::Object(o) = module else {
        return Ok(());
    };
    let Some(class) = classes.get(&o.class) else {
        return Ok(());
    };
    let attrs = o.state.as_deref().and_then(Value::as_dict);
    let attr = |name: &str| attrs.and_then(|a| a.get(name));
    for name in class.parameters.iter().chain(&class.buffers) {
        match attr(name) {
            Some(Value::Tensor(t)) => {
                sd.insert(format!("{prefix}{name}"), t.clone());
            }
            Some(Value::RawTensor(r)) => sd.insert_raw(format!("{prefix}{name}"), r.clone()),
            // `None` stands for an absent optional parameter (a Linear without bias).
            _ => {}
        }
    }
    for (k, v) in attrs.map(|a| &a.entries[..]).unwrap_or(&[]) {
        if let (Some(k), Value::Object(child)) = (k.as_str(), v) {
            if classes.contains_key(&child.class) {
                collect(v, &format!("{prefix}{k}."), classes, sd, depth + 1)?;
            }
        }
    }
    Ok(())
}

/// The state dict of the archive's root module, as `torch.jit.load(f).state_dict()` orders it:
/// each module's parameters, then its buffers, then its submodules in attribute order.
pub fn state_dict(zip: &ZipArchive, data: &[u8], prefix: &str, root: &Value) -> Result<StateDict> {
    let classes = module_classes(zip, data, prefix)?;
    let Value::Object(o) = root else {
        return Err(Error::TorchScript(format!(
            "its data.pkl holds a {}, not a module",
            root.type_name()
        )));
    };
    if !classes.contains_key(&o.class) {
        return Err(Error::TorchScript(format!(
            "the root module's class `{}` has no definition under code/",
            o.class
        )));
    }
    let mut sd = StateDict::new();
    collect(root, "", &classes, &mut sd, 0)?;
    Ok(sd)
}
