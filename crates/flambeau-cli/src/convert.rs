//! `flambeau convert IN OUT`: .pth ↔ .safetensors with key surgery, model selection, dtype
//! conversion, and a weights_only-clean result.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::DType;
use flambeau_core::{KeyRule, StateDict, Value};
use flambeau_serialize::find_state_dict;

use crate::inspect::read;
use flambeau_serialize::sanitize::sanitize;

/// Options of `convert`.
#[derive(clap::Args)]
pub struct Args {
    /// Input: .pth/.pt/.bin (zip or legacy), TorchScript, .safetensors, or a sharded
    /// checkpoint (its index JSON, any shard, or their directory).
    input: PathBuf,
    /// Output: .safetensors writes the model's state dict; anything else a zip .pth.
    output: PathBuf,
    /// Remove this prefix from the keys that have it (e.g. `module.`).
    #[arg(long)]
    strip_prefix: Vec<String>,
    /// Put this prefix in front of every key.
    #[arg(long)]
    add_prefix: Vec<String>,
    /// Rename keys: `REGEX=REPLACEMENT` ($1 for groups). Repeatable.
    #[arg(long)]
    rename: Vec<String>,
    /// Drop keys matching REGEX. Repeatable.
    #[arg(long)]
    drop: Vec<String>,
    /// Keep only this top-level entry (e.g. `model_state_dict` of a training checkpoint).
    #[arg(long)]
    select: Option<String>,
    /// Cast floating-point tensors: float32, float16, bfloat16, float64.
    #[arg(long)]
    dtype: Option<String>,
    /// Write the state dict as Hugging Face–style shards of at most this size (`500MB`,
    /// `2GB`, `10GiB`) plus `OUTPUT.index.json`, named from OUTPUT
    /// (`model.safetensors` → `model-00001-of-00003.safetensors`).
    #[arg(long)]
    max_shard_size: Option<String>,
}

fn parse_dtype(s: &str) -> Result<DType> {
    Ok(match s {
        "float32" | "f32" | "float" => DType::F32,
        "float16" | "f16" | "half" => DType::F16,
        "bfloat16" | "bf16" => DType::BF16,
        "float64" | "f64" | "double" => DType::F64,
        other => bail!("unknown --dtype {other} (float32, float16, bfloat16, float64)"),
    })
}

impl Args {
    fn rules(&self) -> Result<Vec<KeyRule>> {
        let mut rules: Vec<KeyRule> = self
            .strip_prefix
            .iter()
            .map(KeyRule::strip_prefix)
            .collect();
        for r in &self.rename {
            let (pat, rep) = r
                .split_once('=')
                .with_context(|| format!("--rename {r}: expected REGEX=REPLACEMENT"))?;
            rules.push(KeyRule::rename(pat, rep));
        }
        rules.extend(self.drop.iter().map(KeyRule::drop));
        rules.extend(self.add_prefix.iter().map(KeyRule::add_prefix));
        Ok(rules)
    }

    /// Applies the key rules and the cast; tensors candle cannot hold (int8, quantized, …)
    /// follow their keys unchanged.
    fn fix(&self, sd: StateDict) -> Result<StateDict> {
        let rules = self.rules()?;
        let dtype = self.dtype.as_deref().map(parse_dtype).transpose()?;
        Ok(sd.map_keeping_raw(|sd| {
            let mut sd = sd.clone();
            for rule in &rules {
                sd = rule.apply(&sd, &[])?;
            }
            if let Some(d) = dtype {
                sd = sd.to_dtype(d)?;
            }
            Ok(sd)
        })?)
    }
}

/// Replaces the state dict found in `v` (at the top or under its key) by `f(it)`.
fn map_state_dict(v: &mut Value, f: impl FnOnce(StateDict) -> Result<StateDict>) -> Result<()> {
    let found = find_state_dict(v)?;
    let location = found.location.clone();
    let fixed = f(found.state_dict)?.to_value();
    if location.is_empty() {
        *v = fixed;
    } else if let Some(d) = v.as_dict_mut() {
        d.insert(location.as_str(), fixed);
    }
    Ok(())
}

/// The `convert` command.
pub fn run(args: &Args) -> Result<()> {
    let mut v = read(&args.input)?;
    if let Some(key) = &args.select {
        let keys: Vec<String> = v
            .as_dict()
            .map(|d| d.str_keys().map(String::from).collect())
            .unwrap_or_default();
        v = v.get(key).cloned().with_context(|| {
            format!(
                "--select {key}: no such top-level entry (the file has: {})",
                keys.join(", ")
            )
        })?;
    }
    // A whole pickled model (torch.save(model)) is written as its state dict: torch.load's
    // default refuses the module's class.
    if let (Value::Object(o), Some(sd)) = (&v, flambeau_serialize::state_dict_from_module(&v)) {
        println!(
            "a whole pickled {} → its state dict ({} tensors)",
            o.class,
            sd.len()
        );
        v = sd.to_value();
    }
    let to_safetensors = args.output.extension().is_some_and(|e| e == "safetensors");
    if let Some(size) = &args.max_shard_size {
        let max = flambeau_serialize::sharded::parse_size(size)?;
        let sd = args.fix(find_state_dict(&v)?.state_dict)?;
        let files = flambeau_serialize::sharded::save(&sd, &args.output, max)?;
        println!("wrote {} tensors to {} file(s):", sd.len(), files.len());
        for f in files {
            println!("  {}", f.display());
        }
        return Ok(());
    }
    if to_safetensors {
        let sd = args.fix(find_state_dict(&v)?.state_dict)?;
        flambeau_serialize::safetensors::save(&sd, &args.output)?;
        println!("wrote {} tensors to {}", sd.len(), args.output.display());
        return Ok(());
    }
    let mut report = Vec::new();
    sanitize(&mut v, "", &mut report);
    for line in &report {
        println!("{line}");
    }
    let has_rules = !args.rules()?.is_empty() || args.dtype.is_some();
    if has_rules {
        map_state_dict(&mut v, |sd| args.fix(sd))?;
    }
    flambeau_serialize::save(&v, &args.output)?;
    println!(
        "wrote {} (loads with torch.load's defaults)",
        args.output.display()
    );
    Ok(())
}
