//! Recognises the common causes of a state-dict mismatch and says the fix: the part of the
//! message PyTorch never gives.

use std::collections::HashSet;
use std::fmt;

use super::shape_mismatch::ShapeMismatch;
use crate::keys::KeyRule;

/// A likely cause of a mismatch and the one-line fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    /// What happened, in the user's terms.
    pub cause: String,
    /// The call that fixes it.
    pub fix: String,
    /// The fix as a value, for tools that rewrite the file (`flambeau doctor`).
    pub remedy: Remedy,
}

/// What makes the checkpoint load, as a value a tool can apply or print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remedy {
    /// Apply these key rules to the checkpoint; the model then loads strictly.
    Rules(Vec<KeyRule>),
    /// Apply these key rules (maybe none), then load with `strict=False`: some model keys keep
    /// their initial values (a new head, a smaller checkpoint).
    NonStrict(Vec<KeyRule>),
    /// Forget the checkpoint's module versions (`_metadata`): BatchNorm then fills in the
    /// `num_batches_tracked` counters the checkpoint lacks, as for a pre-1.2 file.
    ForgetModuleVersions,
}

/// A wrapper prefix found on one side of a key comparison, and how much it explains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixMatch {
    /// The prefix, with its trailing dot (`module.`).
    pub prefix: String,
    /// True when the checkpoint's keys carry the prefix (strip it), false when the model's do
    /// (add it to the checkpoint's).
    pub strip: bool,
    /// Keys the prefix pairs up.
    pub hits: usize,
    /// Keys on the prefixed side.
    pub total: usize,
}

impl PrefixMatch {
    /// The key rule that maps the checkpoint's keys onto the model's.
    pub fn rule(&self) -> KeyRule {
        if self.strip {
            KeyRule::strip_prefix(self.prefix.clone())
        } else {
            KeyRule::add_prefix(self.prefix.clone())
        }
    }

    /// What produces this prefix (DataParallel, torch.compile, …), in the user's terms.
    pub fn cause(&self) -> String {
        cause_of(&self.prefix)
    }
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

/// The wrapper prefix (DataParallel's `module.`, torch.compile's `_orig_mod.`, Lightning's
/// `model.`, or a first segment every key shares) that best pairs `unexpected` checkpoint keys
/// with `missing` model keys (`filled` count as model keys too). `None` when no prefix explains
/// at least half of the smaller side: a stray key or two is a coincidence, not the cause.
///
/// The one prefix detector: `load_state_dict`'s diagnosis, `flambeau doctor` and the state-dict
/// diff all use it.
pub fn find_prefix(
    missing: &[String],
    filled: &[String],
    unexpected: &[String],
) -> Option<PrefixMatch> {
    if missing.is_empty() || unexpected.is_empty() {
        return None;
    }
    let missing_set: HashSet<&str> = missing.iter().chain(filled).map(String::as_str).collect();
    let unexpected_set: HashSet<&str> = unexpected.iter().map(String::as_str).collect();
    let mut candidates: Vec<String> = KNOWN_PREFIXES.iter().map(|(p, _)| p.to_string()).collect();
    candidates.extend(common_first_segment(unexpected));
    candidates.extend(common_first_segment(missing));

    let mut best: Option<PrefixMatch> = None;
    for p in &candidates {
        for (hits, strip) in [
            (count_stripped(unexpected, &missing_set, p), true),
            (count_stripped(missing, &unexpected_set, p), false),
        ] {
            if hits > 0 && best.as_ref().is_none_or(|b| hits > b.hits) {
                let total = if strip {
                    unexpected.len()
                } else {
                    missing.len()
                };
                best = Some(PrefixMatch {
                    prefix: p.clone(),
                    strip,
                    hits,
                    total,
                });
            }
        }
    }
    best.filter(|b| b.hits * 2 >= missing.len().min(unexpected.len()))
}

/// A wrapper prefix on one side only: DataParallel's `module.`, torch.compile's `_orig_mod.`, ….
fn prefix_diagnosis(
    missing: &[String],
    filled: &[String],
    unexpected: &[String],
    out: &mut Vec<Diagnosis>,
) -> bool {
    let Some(m) = find_prefix(missing, filled, unexpected) else {
        return false;
    };
    let (hits, total, prefix) = (m.hits, m.total, &m.prefix);
    let share = if hits == total {
        format!("all {total}")
    } else {
        format!("{hits} of the {total}")
    };
    let diag = if m.strip {
        Diagnosis {
            cause: format!(
                "{share} unexpected keys are model keys with the prefix `{prefix}`: the checkpoint was saved from {}.",
                m.cause()
            ),
            fix: format!(
                "LoadOptions::default().rule(KeyRule::strip_prefix({prefix:?}))  (or `sd.strip_prefix({prefix:?})`; in PyTorch: `consume_prefix_in_state_dict_if_present(sd, {prefix:?})`)"
            ),
            remedy: Remedy::Rules(vec![m.rule()]),
        }
    } else {
        Diagnosis {
            cause: format!(
                "{share} missing keys are checkpoint keys with the prefix `{prefix}` added: the model is wrapped ({}) but the checkpoint was saved from the bare model.",
                m.cause()
            ),
            fix: format!(
                "LoadOptions::default().rule(KeyRule::add_prefix({prefix:?}))  (or load into the unwrapped model)"
            ),
            remedy: Remedy::Rules(vec![m.rule()]),
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
    if !missing.is_empty()
        && unexpected.is_empty()
        && missing
            .iter()
            .all(|k| k.rsplit('.').next() == Some(super::NUM_BATCHES_TRACKED))
    {
        out.push(Diagnosis {
            cause: format!(
                "the checkpoint lacks only BatchNorm's `num_batches_tracked` counters ({} of them), yet its module versions (`_metadata`) say BatchNorm ≥ 2, so PyTorch does not fill them in: they were deleted from the dict after saving.",
                missing.len()
            ),
            fix: "LoadOptions::default().strict(false)  (the counters keep the model's value; only BatchNorm with momentum=None reads them), or drop the module versions (`sd.clear_metadata()`) so they are filled in as for a pre-1.2 file".into(),
            remedy: Remedy::ForgetModuleVersions,
        });
    } else if !missing.is_empty() && unexpected.is_empty() {
        out.push(Diagnosis {
            cause: format!(
                "the checkpoint has no values for part of the model (under {}): it was saved from a smaller or different model.",
                modules(missing)
            ),
            fix: "LoadOptions::default().strict(false)  (those parameters keep their initial values; check the report's missing_keys)".into(),
            remedy: Remedy::NonStrict(Vec::new()),
        });
    } else if missing.is_empty() && !unexpected.is_empty() {
        out.push(Diagnosis {
            cause: format!(
                "the checkpoint has entries the model does not (under {}): an auxiliary head, an EMA copy or another variant of the architecture.",
                modules(unexpected)
            ),
            fix: "LoadOptions::default().rule(KeyRule::KeepOnlyModelKeys)  (drops the extra entries)".into(),
            remedy: Remedy::Rules(vec![KeyRule::KeepOnlyModelKeys]),
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
        remedy: Remedy::NonStrict(vec![KeyRule::drop(format!(
            "^{}\\.",
            regex::escape(&module)
        ))]),
    });
}
