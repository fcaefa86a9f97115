//! `flambeau doctor`'s analysis: why a checkpoint will not load into a model, in PyTorch's words,
//! what caused it, and the fix — checked by applying it and loading again — as a
//! `flambeau convert` line and a PyTorch one-liner.
//!
//! The causes in the keys come from `load_state_dict`'s own diagnosis (one detector for
//! `module.`, `_orig_mod.`, `model.`, a new head, BatchNorm counters); this module adds what is
//! about the file (TorchScript, a whole pickled model, a training checkpoint, a GPU-saved file).

mod finding;
mod fix;
mod json;
mod report;
mod target;

use std::path::Path;

use flambeau_core::load::{Diagnosis, IncompatibleKeys, Remedy};
use flambeau_core::{KeyRule, LoadOptions, StateDict, Value, VarStore};
use flambeau_serialize::{find_state_dict, open_file, LoadConfig};

pub use finding::Finding;
pub use fix::{Fix, Opener};
pub use report::{DoctorReport, Verdict};
pub use target::{Target, DEFAULT_NUM_CLASSES};

use crate::{Error, Result};

/// Rounds of "apply the fixes so far, load, diagnose what is left" (prefix, then head, …).
const MAX_ROUNDS: usize = 4;

/// Checks the checkpoint at `path` against `target`: see the module documentation. Errors are
/// for files that cannot be read or hold no state dict, and for an unknown architecture.
pub fn diagnose_file(path: impl AsRef<Path>, target: &Target) -> Result<DoctorReport> {
    let path = path.as_ref();
    let checkpoint_error = |source| Error::Checkpoint {
        path: path.to_path_buf(),
        source: Box::new(source),
    };
    let vs = target.build()?;
    let opened = open_file(path, &LoadConfig::default()).map_err(checkpoint_error)?;
    let found = find_state_dict(&opened.value).map_err(checkpoint_error)?;
    // A file whose pickle the tag scan cannot follow was read above: no tags to report.
    let locations = flambeau_serialize::storage_locations(path).unwrap_or_default();
    let findings = Finding::all(&opened, &found, &locations);

    let opener = match opened.format {
        flambeau_serialize::Format::TorchScript => Opener::JitLoad,
        _ => Opener::TorchLoad {
            unsafe_classes: has_foreign_objects(&opened.value),
        },
    };
    let mut fix = Fix::new(opener);
    for x in &findings {
        match x {
            Finding::TrainingCheckpoint { key, .. } => fix.select = Some(key.clone()),
            Finding::WholeModule { .. } => fix.whole_module = true,
            _ => {}
        }
    }

    let sd = &found.state_dict;
    let mut notes = Vec::new();
    let mut diagnosis: Vec<Diagnosis> = Vec::new();
    let first = vs.load_state_dict(sd, &LoadOptions::default());
    let first_incompatible = first
        .as_ref()
        .err()
        .and_then(flambeau_core::Error::incompatible)
        .cloned();
    let mut attempt = first.map(|r| (r, None));
    let mut rounds = 0;
    while let Err(err) = &attempt {
        let Some(keys) = err.incompatible() else {
            break;
        };
        let before = fix.clone();
        for d in &keys.diagnosis {
            if !diagnosis.contains(d) {
                diagnosis.push(d.clone());
            }
            apply_remedy(&mut fix, &d.remedy, keys, &vs);
        }
        rounds += 1;
        if fix == before || rounds >= MAX_ROUNDS {
            break;
        }
        attempt = try_fix(&vs, sd, &fix).map(|r| (r, Some(())));
    }

    let pytorch_says = pytorch_says(&findings, first_incompatible.as_ref(), &attempt, &vs);
    if let Target::Arch { num_classes, .. } = target {
        if let Some(rows) = sd.get("fc.weight").map(|t| t.dims()[0]) {
            if rows != num_classes.unwrap_or(DEFAULT_NUM_CLASSES) {
                notes.push(format!(
                    "the checkpoint's head has {rows} classes: to use it as trained, build the model with num_classes={rows} (`--num-classes {rows}`)."
                ));
            }
        }
    }
    let (verdict, unresolved) = match &attempt {
        Ok((report, _)) => {
            if !report.filled.is_empty() && !fix.forget_module_versions {
                notes.push(format!(
                    "{} BatchNorm num_batches_tracked counters are absent and the module versions predate them (a PyTorch < 1.2 checkpoint): PyTorch and flambeau keep the model's counters, as designed.",
                    report.filled.len()
                ));
            }
            if !report.dtype_casts.is_empty() {
                let c = &report.dtype_casts[0];
                notes.push(format!(
                    "{} tensors are cast on the way in, as Tensor.copy_ does (e.g. {}: {:?} → {:?}).",
                    report.dtype_casts.len(),
                    c.key,
                    c.from,
                    c.to
                ));
            }
            let needs_fix = fix != Fix::new(fix.opener.clone())
                || findings.iter().any(|x| x.pytorch_says().is_some());
            if needs_fix {
                (Verdict::Fixable, None)
            } else {
                (Verdict::Loads, None)
            }
        }
        Err(e) => (Verdict::CannotLoad, Some(e.to_string())),
    };
    Ok(DoctorReport {
        file: path.to_path_buf(),
        format: opened.format.clone(),
        weights_at: found.location.clone(),
        layout: found.layout,
        target: target.clone(),
        tensors: sd.len(),
        findings,
        pytorch_says,
        diagnosis,
        notes,
        fix: (verdict == Verdict::Fixable).then_some(fix),
        unresolved,
        verdict,
    })
}

/// The checkpoint's state dict with the fix's key rules applied (and its module versions
/// dropped when asked), as `flambeau convert` writes it.
pub fn apply_fix(
    sd: &StateDict,
    fix: &Fix,
) -> std::result::Result<StateDict, flambeau_core::Error> {
    let mut out = sd.clone();
    for rule in &fix.rules {
        out = out.map_keeping_raw(|s| rule.apply(s, &[]))?;
    }
    if fix.forget_module_versions {
        out.clear_metadata();
    }
    Ok(out)
}

fn try_fix(
    vs: &VarStore,
    sd: &StateDict,
    fix: &Fix,
) -> flambeau_core::Result<flambeau_core::LoadReport> {
    let fixed = apply_fix(sd, fix)?;
    vs.load_state_dict(&fixed, &LoadOptions::default().strict(fix.strict))
}

/// Folds one diagnosis' remedy into the fix. `KeepOnlyModelKeys` becomes `--drop` rules for
/// the unexpected keys, which `flambeau convert` can apply without knowing the model.
fn apply_remedy(fix: &mut Fix, remedy: &Remedy, keys: &IncompatibleKeys, vs: &VarStore) {
    let expand = |rules: &[KeyRule]| -> Vec<KeyRule> {
        rules
            .iter()
            .flat_map(|r| match r {
                KeyRule::KeepOnlyModelKeys => drops_for(&keys.unexpected_keys, vs),
                other => vec![other.clone()],
            })
            .collect()
    };
    match remedy {
        Remedy::Rules(r) => fix.add_rules(expand(r)),
        Remedy::NonStrict(r) => {
            fix.add_rules(expand(r));
            fix.strict = false;
        }
        Remedy::ForgetModuleVersions => fix.forget_module_versions = true,
    }
}

/// `--drop` patterns removing exactly `unexpected`: a whole top-level module when the model has
/// nothing under that name, else each key.
fn drops_for(unexpected: &[String], vs: &VarStore) -> Vec<KeyRule> {
    let model = vs.state_dict();
    let mut out: Vec<KeyRule> = Vec::new();
    for k in unexpected {
        let seg = k.split('.').next().unwrap_or(k);
        let model_has = model
            .keys()
            .any(|m| m == seg || m.starts_with(&format!("{seg}.")));
        let rule = if model_has || seg == k {
            KeyRule::drop(format!("^{}$", regex_escape(k)))
        } else {
            KeyRule::drop(format!("^{}\\.", regex_escape(seg)))
        };
        if !out.contains(&rule) {
            out.push(rule);
        }
    }
    out
}

/// Escapes the characters a key may hold that regular expressions treat specially.
fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// True when the file holds objects other than PyTorch's own (argparse.Namespace, numpy
/// scalars, whole modules): `torch.load`'s default weights_only=True refuses it.
fn has_foreign_objects(v: &Value) -> bool {
    match v {
        Value::Object(o) => !o.class.starts_with("torch."),
        Value::Dict(d) => d
            .entries
            .iter()
            .any(|(k, x)| has_foreign_objects(k) || has_foreign_objects(x)),
        Value::List(xs) | Value::Tuple(xs) | Value::Set(xs) => xs.iter().any(has_foreign_objects),
        _ => false,
    }
}

/// What PyTorch answers to `model.load_state_dict(torch.load(f))`: the first step that fails.
fn pytorch_says<T>(
    findings: &[Finding],
    first: Option<&IncompatibleKeys>,
    last: &flambeau_core::Result<T>,
    vs: &VarStore,
) -> Option<String> {
    if let Some(text) = findings.iter().find_map(Finding::pytorch_says) {
        return Some(text);
    }
    for x in findings {
        if let Finding::TrainingCheckpoint { top_level_keys, .. } = x {
            // The top-level dict has no `_metadata`: BatchNorm fills its counters in.
            let missing = vs
                .state_dict()
                .keys()
                .filter(|k| !k.ends_with(".num_batches_tracked"))
                .map(str::to_string)
                .collect();
            let keys = IncompatibleKeys {
                model_name: vs.model_name(),
                strict: true,
                missing_keys: missing,
                unexpected_keys: top_level_keys.clone(),
                shape_mismatches: Vec::new(),
                diagnosis: Vec::new(),
            };
            return Some(format!("RuntimeError: {}", keys.pytorch_message()));
        }
    }
    if let Some(k) = first {
        return Some(format!("RuntimeError: {}", k.pytorch_message()));
    }
    last.as_ref().err().map(|e| e.to_string())
}
