//! Recognises the common causes of a state-dict mismatch and says the fix: the part of the
//! message PyTorch never gives.

use std::collections::HashSet;
use std::fmt;

use super::shape_mismatch::ShapeMismatch;

/// A likely cause of a mismatch and the one-line fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    /// What happened, in the user's terms.
    pub cause: String,
    /// The call that fixes it.
    pub fix: String,
}

impl fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}\n    fix: {}", self.cause, self.fix)
    }
}

/// Wrapper prefixes seen in the wild, longest first, with what produces them.
const KNOWN_PREFIXES: &[(&str, &str)] = &[
    (
        "module._orig_mod.",
        "a torch.compile'd model wrapped in nn.DataParallel/DistributedDataParallel",
    ),
    (
        "_orig_mod.module.",
        "a DataParallel/DistributedDataParallel model passed through torch.compile",
    ),
    (
        "module.",
        "nn.DataParallel or DistributedDataParallel, which prefix every key with `module.`",
    ),
    (
        "_orig_mod.",
        "a torch.compile'd model, whose wrapper prefixes every key with `_orig_mod.`",
    ),
    (
        "model.",
        "a wrapper module that holds the network as `self.model` (a Lightning module, an EMA wrapper, …)",
    ),
    (
        "backbone.",
        "a wrapper that holds the network as `self.backbone` (a detection or segmentation model, …)",
    ),
];

/// Module names that usually hold the classification head.
const HEAD_NAMES: &[&str] = &["fc", "classifier", "head", "heads", "last_linear", "logits"];

/// Everything that explains `missing` / `unexpected` / `mismatches`.
///
/// `filled` are model keys the checkpoint lacked but that need no value (pre-1.2 BatchNorm
/// counters): a prefixed copy of them in the checkpoint still points at the prefix.
pub fn diagnose(
    missing: &[String],
    filled: &[String],
    unexpected: &[String],
    mismatches: &[ShapeMismatch],
) -> Vec<Diagnosis> {
    let mut out = Vec::new();
    let prefix_found = prefix_diagnosis(missing, filled, unexpected, &mut out);
    if !prefix_found {
        leftover_diagnosis(missing, unexpected, &mut out);
    }
    head_diagnosis(mismatches, &mut out);
    out
}

fn first_segment(key: &str) -> &str {
    key.split('.').next().unwrap_or(key)
}

/// The first segment (with its dot) shared by every key, if any.
fn common_first_segment(keys: &[String]) -> Option<String> {
    let first = first_segment(keys.first()?);
    (keys.iter().all(|k| first_segment(k) == first) && keys.iter().all(|k| k.contains('.')))
        .then(|| format!("{first}."))
}

/// How many `from` keys become a `to` key once `prefix` is stripped from them.
fn count_stripped(from: &[String], to: &HashSet<&str>, prefix: &str) -> usize {
    from.iter()
        .filter_map(|k| k.strip_prefix(prefix))
        .filter(|k| to.contains(k))
        .count()
}

fn cause_of(prefix: &str) -> String {
    KNOWN_PREFIXES
        .iter()
        .find(|(p, _)| *p == prefix)
        .map(|(_, c)| c.to_string())
        .unwrap_or_else(|| {
            format!(
                "a model that kept this network as its submodule `{}`",
                prefix.trim_end_matches('.')
            )
        })
}

/// A wrapper prefix on one side only: DataParallel's `module.`, torch.compile's `_orig_mod.`, ….
fn prefix_diagnosis(
    missing: &[String],
    filled: &[String],
    unexpected: &[String],
    out: &mut Vec<Diagnosis>,
) -> bool {
    if missing.is_empty() || unexpected.is_empty() {
        return false;
    }
    let missing_set: HashSet<&str> = missing.iter().chain(filled).map(String::as_str).collect();
    let unexpected_set: HashSet<&str> = unexpected.iter().map(String::as_str).collect();
    let mut candidates: Vec<String> = KNOWN_PREFIXES.iter().map(|(p, _)| p.to_string()).collect();
    candidates.extend(common_first_segment(unexpected));
    candidates.extend(common_first_segment(missing));

    // (explained pairs, prefix, checkpoint has the prefix?)
    let mut best: Option<(usize, String, bool)> = None;
    for p in &candidates {
        for (hits, strip) in [
            (count_stripped(unexpected, &missing_set, p), true),
            (count_stripped(missing, &unexpected_set, p), false),
        ] {
            if hits > 0 && best.as_ref().is_none_or(|(h, _, _)| hits > *h) {
                best = Some((hits, p.clone(), strip));
            }
        }
    }
    let Some((hits, prefix, strip)) = best else {
        return false;
    };
    // A prefix that explains only a stray key or two is a coincidence, not the cause.
    if hits * 2 < missing.len().min(unexpected.len()) {
        return false;
    }
    let total = if strip {
        unexpected.len()
    } else {
        missing.len()
    };
    let share = if hits == total {
        format!("all {total}")
    } else {
        format!("{hits} of the {total}")
    };
    let diag = if strip {
        Diagnosis {
            cause: format!(
                "{share} unexpected keys are model keys with the prefix `{prefix}`: the checkpoint was saved from {}.",
                cause_of(&prefix)
            ),
            fix: format!(
                "LoadOptions::default().rule(KeyRule::strip_prefix({prefix:?}))  (or `sd.strip_prefix({prefix:?})`; in PyTorch: `consume_prefix_in_state_dict_if_present(sd, {prefix:?})`)"
            ),
        }
    } else {
        Diagnosis {
            cause: format!(
                "{share} missing keys are checkpoint keys with the prefix `{prefix}` added: the model is wrapped ({}) but the checkpoint was saved from the bare model.",
                cause_of(&prefix)
            ),
            fix: format!(
                "LoadOptions::default().rule(KeyRule::add_prefix({prefix:?}))  (or load into the unwrapped model)"
            ),
        }
    };
    out.push(diag);
    true
}

/// Keys on one side only, grouped by top-level module.
fn leftover_diagnosis(missing: &[String], unexpected: &[String], out: &mut Vec<Diagnosis>) {
    let modules = |keys: &[String]| {
        let mut seen: Vec<&str> = Vec::new();
        for k in keys {
            let m = first_segment(k);
            if !seen.contains(&m) {
                seen.push(m);
            }
        }
        seen.iter()
            .map(|m| format!("`{m}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !missing.is_empty() && unexpected.is_empty() {
        out.push(Diagnosis {
            cause: format!(
                "the checkpoint has no values for part of the model (under {}): it was saved from a smaller or different model.",
                modules(missing)
            ),
            fix: "LoadOptions::default().strict(false)  (those parameters keep their initial values; check the report's missing_keys)".into(),
        });
    } else if missing.is_empty() && !unexpected.is_empty() {
        out.push(Diagnosis {
            cause: format!(
                "the checkpoint has entries the model does not (under {}): an auxiliary head, an EMA copy or another variant of the architecture.",
                modules(unexpected)
            ),
            fix: "LoadOptions::default().rule(KeyRule::KeepOnlyModelKeys)  (drops the extra entries)".into(),
        });
    }
}

/// Shape mismatches confined to the classification head: fine-tuning for other classes.
fn head_diagnosis(mismatches: &[ShapeMismatch], out: &mut Vec<Diagnosis>) {
    let Some(first) = mismatches.first() else {
        return;
    };
    let module_of = |k: &str| k.rsplit_once('.').map_or("", |(m, _)| m).to_string();
    let module = module_of(&first.key);
    let leaf = module.rsplit('.').next().unwrap_or(&module);
    let same_module = mismatches.iter().all(|m| module_of(&m.key) == module);
    if !same_module || !HEAD_NAMES.contains(&leaf) {
        return;
    }
    let classes = |d: &[usize]| d.first().copied().unwrap_or(0);
    out.push(Diagnosis {
        cause: format!(
            "only the head `{module}` differs ({} outputs in the checkpoint, {} in the model): the checkpoint was trained for another number of classes.",
            classes(&first.checkpoint),
            classes(&first.model)
        ),
        fix: "LoadOptions::default().skip_shape_mismatch(true)  (loads everything else and keeps the new head's initial values, listed in the report)".into(),
    });
}
