//! Writes the synthetic dataset to a .safetensors file (`images` [N,3,32,32], `labels` [N]) so
//! that other tools (PyTorch) can train on exactly the same images.
//!
//! `cargo run --release -p flambeau-vision --example dump_synthetic -- OUT.safetensors N [seed] [val]`

use std::collections::HashMap;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use flambeau_vision::data::{Dataset, Synthetic};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = args
        .first()
        .context("usage: dump_synthetic OUT.safetensors N [seed] [val]")?;
    let n: usize = args.get(1).context("N")?.parse()?;
    let seed: u64 = args.get(2).map_or(Ok(0), |s| s.parse())?;
    let ds = if args.get(3).is_some_and(|s| s == "val") {
        Synthetic::val(n, seed)
    } else {
        Synthetic::train(n, seed)
    };
    let mut pixels = Vec::with_capacity(n * 3 * 32 * 32);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let s = ds.get(i)?;
        pixels.extend_from_slice(&s.pixels);
        labels.push(s.label as i64);
    }
    let mut t = HashMap::new();
    t.insert(
        "images".to_string(),
        Tensor::from_vec(pixels, (n, 3, 32, 32), &Device::Cpu)?,
    );
    t.insert(
        "labels".to_string(),
        Tensor::from_vec(labels, n, &Device::Cpu)?,
    );
    candle_core::safetensors::save(&t, out)?;
    Ok(())
}
