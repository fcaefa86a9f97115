//! `flambeau inspect FILE`: the tree of a checkpoint, and what kind of file it looks like. The
//! analysis is `flambeau_serialize::inspect`; this file reads the file and prints.

use std::path::Path;

use anyhow::{Context, Result};
use flambeau_core::Value;
use flambeau_serialize::{inspect, LoadConfig};
use serde_json::json;

/// Reads any file flambeau opens — `.pth` (any torch.save format), `.safetensors`, a sharded
/// checkpoint (index JSON, a shard or their directory), a TorchScript archive — as a value tree.
pub fn read(path: &Path) -> Result<Value> {
    flambeau_serialize::open(path, &LoadConfig::default())
        .with_context(|| format!("reading {}", path.display()))
}

/// The `inspect` command.
pub fn run(path: &Path, json: bool, with_stats: bool) -> Result<()> {
    let opened = flambeau_serialize::open_file(path, &LoadConfig::default())
        .with_context(|| format!("reading {}", path.display()))?;
    let v = opened.value;
    if json {
        for t in inspect::tensors(&v, with_stats)? {
            let mut o = json!({"key": t.key, "dtype": t.dtype, "shape": t.shape});
            if let Some(layout) = t.layout {
                o["layout"] = layout.into();
            }
            if let Some(s) = t.stats {
                o["min"] = s.min.into();
                o["max"] = s.max.into();
                o["mean"] = s.mean.into();
                o["sum"] = s.sum.into();
            }
            println!("{o}");
        }
        return Ok(());
    }
    println!("{}: {}", path.display(), inspect::summary(&v));
    println!("format: {}", opened.format);
    print!("{}", inspect::tree(&v, with_stats)?);
    Ok(())
}
