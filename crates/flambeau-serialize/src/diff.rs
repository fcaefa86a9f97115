//! [`diff_files`]: how the model state dicts of two checkpoint files differ (`flambeau diff`) —
//! keys only in one, shapes, dtypes and values, with the key rule that maps A onto B — as a
//! [`FileDiff`] whose `Display` is the text report and [`FileDiff::to_json`] the JSON one. The
//! comparison itself is [`flambeau_core::diff`].

use std::fmt;
use std::path::{Path, PathBuf};

use flambeau_core::diff::{diff, SpecDiff, StateDictDiff};
use flambeau_core::{KeyRule, StateDict};
use serde_json::{json, Value as Json};

use crate::{find_state_dict, open, Error, LoadConfig, Result};

/// Two files compared.
#[derive(Debug, Clone)]
pub struct FileDiff {
    /// The first file.
    pub a: PathBuf,
    /// The second file.
    pub b: PathBuf,
    /// Tensors of A's state dict.
    pub tensors_a: usize,
    /// Tensors of B's state dict.
    pub tensors_b: usize,
    /// The comparison.
    pub diff: StateDictDiff,
}

/// Reads the model state dict of a file (any file [`open`] reads); errors name the file.
fn state_dict(path: &Path) -> Result<StateDict> {
    let v = open(path, &LoadConfig::default()).map_err(|source| Error::Reading {
        path: path.into(),
        source: Box::new(source),
    })?;
    find_state_dict(&v)
        .map(|f| f.state_dict)
        .map_err(|e| Error::NoStateDict(format!("{}: {e}", path.display())))
}

/// Compares the model state dicts of two files (see [`flambeau_core::diff::diff`]).
pub fn diff_files(a: &Path, b: &Path) -> Result<FileDiff> {
    let (sa, sb) = (state_dict(a)?, state_dict(b)?);
    Ok(FileDiff {
        a: a.into(),
        b: b.into(),
        tensors_a: sa.len(),
        tensors_b: sb.len(),
        diff: diff(&sa, &sb)?,
    })
}

/// The rule in words: ``B = A with `module.` stripped``.
pub fn rule_text(rule: &KeyRule) -> String {
    match rule {
        KeyRule::StripPrefix(p) => format!("B = A with `{p}` stripped"),
        KeyRule::AddPrefix(p) => format!("B = A with `{p}` put in front of every key"),
        other => format!("B = A with {other}"),
    }
}

impl FileDiff {
    /// How many changed tensors the text report lists, largest difference first (the JSON
    /// report lists every tensor).
    pub const SHOWN: usize = 20;

    /// The JSON report: counts, the key rule, every difference, and whether the files are
    /// identical (a NaN against a number, which JSON cannot hold, is `null`).
    pub fn to_json(&self) -> Json {
        let d = &self.diff;
        let spec = |s: &SpecDiff| json!({"key": s.key, "a": {"shape": s.a.shape, "dtype": s.a.dtype}, "b": {"shape": s.b.shape, "dtype": s.b.dtype}});
        let num = |x: f64| if x.is_finite() { json!(x) } else { Json::Null };
        json!({
            "tensors_a": self.tensors_a,
            "tensors_b": self.tensors_b,
            "key_rule": d.rule.as_ref().map(rule_text),
            "key_rule_cause": d.rule_cause,
            "only_in_a": d.only_in_a,
            "only_in_b": d.only_in_b,
            "shape_differs": d.shape_differs.iter().map(spec).collect::<Vec<_>>(),
            "dtype_differs": d.dtype_differs.iter().map(spec).collect::<Vec<_>>(),
            "values": d.values.iter().map(|v| json!({"key": v.key, "max_abs": num(v.max_abs), "max_rel": num(v.max_rel)})).collect::<Vec<_>>(),
            "not_compared": d.not_compared.iter().map(|(k, why)| json!({"key": k, "why": why})).collect::<Vec<_>>(),
            "max_abs": num(d.max_abs()),
            "identical": d.identical(),
        })
    }
}

impl fmt::Display for FileDiff {
    /// The text report, ending with `identical` or `different`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.diff;
        writeln!(f, "A: {} ({} tensors)", self.a.display(), self.tensors_a)?;
        writeln!(f, "B: {} ({} tensors)", self.b.display(), self.tensors_b)?;
        if let (Some(rule), Some(cause)) = (&d.rule, &d.rule_cause) {
            let rule = rule_text(rule);
            writeln!(f, "key rule: {rule} ({cause}); compared after applying it")?;
        }
        for (title, keys) in [("only in A", &d.only_in_a), ("only in B", &d.only_in_b)] {
            if !keys.is_empty() {
                writeln!(f, "{title} ({}):", keys.len())?;
                for k in keys {
                    writeln!(f, "  {k}")?;
                }
            }
        }
        if !d.shape_differs.is_empty() {
            writeln!(f, "shape differs ({}):", d.shape_differs.len())?;
            for s in &d.shape_differs {
                let (a, b) = (&s.a.shape, &s.b.shape);
                writeln!(f, "  {}: {a:?} in A, {b:?} in B", s.key)?;
            }
        }
        if !d.dtype_differs.is_empty() {
            writeln!(f, "dtype differs ({}):", d.dtype_differs.len())?;
            for s in &d.dtype_differs {
                writeln!(f, "  {}: {} in A, {} in B", s.key, s.a.dtype, s.b.dtype)?;
            }
        }
        for (k, why) in &d.not_compared {
            writeln!(f, "not compared: {k}: {why}")?;
        }
        let mut changed: Vec<_> = d.changed().collect();
        changed.sort_by(|x, y| y.max_abs.total_cmp(&x.max_abs));
        let (n, common) = (changed.len(), d.values.len());
        writeln!(f, "values: {n} of {common} common tensors differ")?;
        if !changed.is_empty() {
            let shown = &changed[..n.min(Self::SHOWN)];
            let width = shown.iter().map(|v| v.key.len()).max().unwrap_or(3);
            writeln!(
                f,
                "  {:width$}  {:>12}  {:>12}",
                "key", "max abs", "max rel"
            )?;
            for v in shown {
                writeln!(
                    f,
                    "  {:width$}  {:>12.4e}  {:>12.4e}",
                    v.key, v.max_abs, v.max_rel
                )?;
            }
            if n > Self::SHOWN {
                writeln!(
                    f,
                    "  … {} more (--json lists every tensor)",
                    n - Self::SHOWN
                )?;
            }
        }
        write!(
            f,
            "{}",
            if d.identical() {
                "identical"
            } else {
                "different"
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    fn write(path: &Path, entries: &[(&str, f32)]) {
        let mut sd = StateDict::new();
        for (k, v) in entries {
            sd.insert(*k, Tensor::full(*v, (2, 2), &Device::Cpu).unwrap());
        }
        crate::save_state_dict(&sd, path).unwrap();
    }

    #[test]
    fn reports_the_rule_and_the_values() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.pth"), dir.path().join("b.pth"));
        write(&a, &[("module.w", 1.0), ("module.v", 2.0)]);
        write(&b, &[("w", 1.5), ("v", 2.0)]);
        let d = diff_files(&a, &b).unwrap();
        assert!(!d.diff.identical());
        let text = d.to_string();
        assert!(
            text.contains("key rule: B = A with `module.` stripped"),
            "{text}"
        );
        assert!(
            text.contains("values: 1 of 2 common tensors differ"),
            "{text}"
        );
        assert!(text.ends_with("\ndifferent"), "{text}");
        let j = d.to_json();
        assert_eq!(j["tensors_a"], 2);
        assert_eq!(j["max_abs"], 0.5);
        assert_eq!(j["values"].as_array().unwrap().len(), 2);
        assert!(diff_files(&a, &a).unwrap().diff.identical());
        assert_eq!(
            diff_files(&a, &a).unwrap().to_string().lines().last(),
            Some("identical")
        );
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.pth");
        write(&a, &[("w", 1.0)]);
        let missing = dir.path().join("missing.pth");
        let e = diff_files(&missing, &a).unwrap_err();
        assert!(e.to_string().contains("missing.pth"), "{e}");
        assert!(std::error::Error::source(&e).is_some());
    }
}
