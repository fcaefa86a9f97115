//! `flambeau diff A B`: keys only in A / only in B, shape and dtype differences, and how far
//! apart the common tensors' values are, with the key rule that maps A onto B. The comparison
//! is `flambeau_core::diff`; this file reads the files and prints.

use std::path::{Path, PathBuf};

use anyhow::Result;
use flambeau_core::diff::{diff, StateDictDiff};
use flambeau_core::{KeyRule, StateDict};
use flambeau_serialize::find_state_dict;
use serde_json::{json, Value as Json};

/// How many changed tensors the text lists (all of them with --json).
const SHOWN: usize = 20;

/// Options of `diff`.
#[derive(clap::Args)]
pub struct Args {
    /// The first checkpoint (any file `inspect` reads).
    a: PathBuf,
    /// The second checkpoint.
    b: PathBuf,
    /// One JSON object instead of the text.
    #[arg(long)]
    json: bool,
}

fn state_dict(path: &Path) -> Result<StateDict> {
    Ok(find_state_dict(&crate::inspect::read(path)?)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        .state_dict)
}

/// The rule in words: `B = A with `module.` stripped`.
fn rule_text(rule: &KeyRule) -> String {
    match rule {
        KeyRule::StripPrefix(p) => format!("B = A with `{p}` stripped"),
        KeyRule::AddPrefix(p) => format!("B = A with `{p}` put in front of every key"),
        other => format!("B = A with {other}"),
    }
}

/// The `diff` command; returns the exit code (0 identical, 1 different, 2 error), as diff(1).
pub fn run(args: &Args) -> i32 {
    match compare(args) {
        Ok(identical) => i32::from(!identical),
        Err(e) => {
            if args.json {
                println!("{:#}", json!({ "error": format!("{e:#}"), "exit_code": 2 }));
            } else {
                eprintln!("error: {e:#}");
            }
            2
        }
    }
}

fn compare(args: &Args) -> Result<bool> {
    let (a, b) = (state_dict(&args.a)?, state_dict(&args.b)?);
    let d = diff(&a, &b)?;
    if args.json {
        println!("{:#}", to_json(&d, a.len(), b.len()));
    } else {
        print_text(args, &d, a.len(), b.len());
    }
    Ok(d.identical())
}

fn list(title: &str, keys: &[String]) {
    if !keys.is_empty() {
        println!("{title} ({}):", keys.len());
        for k in keys {
            println!("  {k}");
        }
    }
}

fn print_text(args: &Args, d: &StateDictDiff, na: usize, nb: usize) {
    println!("A: {} ({na} tensors)", args.a.display());
    println!("B: {} ({nb} tensors)", args.b.display());
    if let (Some(rule), Some(cause)) = (&d.rule, &d.rule_cause) {
        println!(
            "key rule: {} ({cause}); compared after applying it",
            rule_text(rule)
        );
    }
    list("only in A", &d.only_in_a);
    list("only in B", &d.only_in_b);
    let shape = |s: &[usize]| format!("{s:?}");
    if !d.shape_differs.is_empty() {
        println!("shape differs ({}):", d.shape_differs.len());
        for s in &d.shape_differs {
            println!(
                "  {}: {} in A, {} in B",
                s.key,
                shape(&s.a.shape),
                shape(&s.b.shape)
            );
        }
    }
    if !d.dtype_differs.is_empty() {
        println!("dtype differs ({}):", d.dtype_differs.len());
        for s in &d.dtype_differs {
            println!("  {}: {} in A, {} in B", s.key, s.a.dtype, s.b.dtype);
        }
    }
    for (k, why) in &d.not_compared {
        println!("not compared: {k}: {why}");
    }
    let mut changed: Vec<_> = d.changed().collect();
    changed.sort_by(|x, y| y.max_abs.total_cmp(&x.max_abs));
    println!(
        "values: {} of {} common tensors differ",
        changed.len(),
        d.values.len()
    );
    if !changed.is_empty() {
        let width = changed
            .iter()
            .take(SHOWN)
            .map(|v| v.key.len())
            .max()
            .unwrap_or(3);
        println!("  {:width$}  {:>12}  {:>12}", "key", "max abs", "max rel");
        for v in changed.iter().take(SHOWN) {
            println!(
                "  {:width$}  {:>12.4e}  {:>12.4e}",
                v.key, v.max_abs, v.max_rel
            );
        }
        if changed.len() > SHOWN {
            println!(
                "  … {} more (--json lists every tensor)",
                changed.len() - SHOWN
            );
        }
    }
    println!(
        "{}",
        if d.identical() {
            "identical"
        } else {
            "different"
        }
    );
}

fn to_json(d: &StateDictDiff, na: usize, nb: usize) -> Json {
    let spec = |s: &flambeau_core::diff::SpecDiff| json!({"key": s.key, "a": {"shape": s.a.shape, "dtype": s.a.dtype}, "b": {"shape": s.b.shape, "dtype": s.b.dtype}});
    // JSON has no infinity: a NaN against a number is reported as null.
    let num = |x: f64| if x.is_finite() { json!(x) } else { Json::Null };
    json!({
        "tensors_a": na,
        "tensors_b": nb,
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
