//! `flambeau convert IN OUT`: .pth ↔ .safetensors with key surgery, model selection, dtype
//! conversion, and a weights_only-clean result. The conversion is
//! `flambeau_serialize::convert`; this file parses the flags and prints what it did.

use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use flambeau_core::KeyRule;
use flambeau_serialize::convert::{convert, float_dtype, ConvertOptions, Written};
use flambeau_serialize::sharded;

use crate::inspect::read;

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

impl Args {
    /// The key rules (strip, rename, drop, add, in that order), the cast and the shard size.
    fn options(&self) -> Result<ConvertOptions> {
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
        let dtype = self.dtype.as_deref().map(|d| {
            float_dtype(d).with_context(|| {
                format!("unknown --dtype {d} (float32, float16, bfloat16, float64)")
            })
        });
        let max_shard_size = self.max_shard_size.as_deref().map(sharded::parse_size);
        Ok(ConvertOptions {
            select: self.select.clone(),
            rules,
            dtype: dtype.transpose()?,
            max_shard_size: max_shard_size.transpose()?,
        })
    }
}

/// The `convert` command.
pub fn run(args: &Args) -> Result<()> {
    let options = args.options()?;
    let converted = convert(read(&args.input)?, &args.output, &options).map_err(|e| match e {
        e @ flambeau_serialize::Error::NoSuchEntry { .. } => anyhow!("--select {e}"),
        e => e.into(),
    })?;
    if let Some((class, tensors)) = &converted.unwrapped_module {
        println!("a whole pickled {class} → its state dict ({tensors} tensors)");
    }
    match converted.written {
        Written::Shards { tensors, files } => {
            println!("wrote {tensors} tensors to {} file(s):", files.len());
            for f in files {
                println!("  {}", f.display());
            }
        }
        Written::Safetensors { tensors } => {
            println!("wrote {tensors} tensors to {}", args.output.display())
        }
        Written::Pth => {
            for line in &converted.sanitized {
                println!("{line}");
            }
            println!(
                "wrote {} (loads with torch.load's defaults)",
                args.output.display()
            );
        }
    }
    Ok(())
}
