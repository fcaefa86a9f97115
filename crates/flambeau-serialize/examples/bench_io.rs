//! I/O benchmark driver for `cargo xtask bench io`: loads a .pth with flambeau and with candle's
//! own reader, saves it back, and prints one JSON line of timings and resident memory.
//!
//! `cargo run --release -p flambeau-serialize --example bench_io -- FILE [runs]`

use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::Device;
use flambeau_serialize::{find_state_dict, load, LoadConfig};

/// `VmRSS` / `VmHWM` of this process, in KiB.
fn mem_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let file = args.first().context("usage: bench_io FILE [runs]")?;
    let runs: usize = args.get(1).map_or(Ok(5), |s| s.parse())?;
    let size = std::fs::metadata(file)?.len();
    let baseline = mem_kib("VmRSS:");

    // First load: peak resident memory above the baseline (every tensor touched by a sum).
    let start = Instant::now();
    let v = load(file, &LoadConfig::default())?;
    let sd = find_state_dict(&v)?.state_dict;
    let mut checksum = 0f64;
    for (_, t) in sd.iter() {
        // Touch every element without allocating a converted copy.
        checksum += t
            .sum_all()?
            .to_dtype(candle_core::DType::F64)?
            .to_scalar::<f64>()?;
    }
    let first = start.elapsed().as_secs_f64();
    let peak = mem_kib("VmHWM:").saturating_sub(baseline);
    drop(v);

    let mut loads = vec![first];
    for _ in 1..runs {
        let start = Instant::now();
        let v = load(file, &LoadConfig::default())?;
        loads.push(start.elapsed().as_secs_f64());
        drop(v);
    }
    let mut candle = Vec::new();
    for _ in 0..runs.min(3) {
        let start = Instant::now();
        let t = candle_core::pickle::read_all(file)?;
        candle.push(start.elapsed().as_secs_f64());
        drop(t);
    }
    let v = load(
        file,
        &LoadConfig {
            device: Device::Cpu,
        },
    )?;
    let dir = std::env::temp_dir();
    let out = dir.join(format!("flambeau-bench-{}.pth", std::process::id()));
    let mut saves = Vec::new();
    let mut to_bytes = Vec::new();
    for _ in 0..runs.min(3) {
        let start = Instant::now();
        let file = std::fs::File::create(&out)?;
        let mut w =
            flambeau_serialize::write_to(&v, std::io::BufWriter::with_capacity(1 << 20, file))?;
        std::io::Write::flush(&mut w)?;
        drop(w);
        to_bytes.push(start.elapsed().as_secs_f64());
        let start = Instant::now();
        flambeau_serialize::save(&v, &out)?;
        saves.push(start.elapsed().as_secs_f64());
    }
    std::fs::remove_file(&out).ok();
    println!(
        "{}",
        serde_json::json!({
            "file_bytes": size, "tensors": sd.len(), "checksum": checksum,
            "load_s": median(loads), "load_touch_first_s": first, "peak_rss_above_baseline_bytes": peak * 1024,
            "candle_read_all_s": median(candle), "save_no_fsync_s": median(to_bytes), "save_atomic_fsync_s": median(saves),
        })
    );
    Ok(())
}
