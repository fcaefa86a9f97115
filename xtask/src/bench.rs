//! `cargo xtask bench io`: flambeau's .pth reader and writer against torch.load / torch.save
//! (and candle's own reader) on a ResNet-152 state_dict, in one run on this machine.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::Value;

pub fn json_line(out: &[u8]) -> Result<Value> {
    let text = String::from_utf8_lossy(out);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .context("no JSON line in the output")?;
    Ok(serde_json::from_str(line)?)
}

/// `(busy, total)` CPU time over all cores since boot, from `/proc/stat`.
fn cpu_times() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = fields.iter().sum();
    let idle = fields.get(3)? + fields.get(4).unwrap_or(&0); // idle + iowait
    Some((total - idle, total))
}

/// Warns when something else is using the CPU (timings would be unreliable): samples how busy
/// the cores are over one second while this process sleeps. Returns the busy fraction.
pub fn check_quiet() -> Option<f64> {
    let (b0, t0) = cpu_times()?;
    std::thread::sleep(std::time::Duration::from_secs(1));
    let (b1, t1) = cpu_times()?;
    let busy = (b1 - b0) as f64 / (t1 - t0).max(1) as f64;
    if busy > 0.2 {
        eprintln!(
            "WARNING: the CPU is {:.0}% busy with other work: timings will be noisy",
            100.0 * busy
        );
    }
    Some(busy)
}

/// Builds `package`'s `examples` in release mode; returns the folder that holds them.
pub fn build_examples(root: &Path, package: &str, examples: &[&str]) -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(&cargo);
    build
        .current_dir(root)
        .args(["build", "--release", "-q", "-p", package]);
    for e in examples {
        build.args(["--example", e]);
    }
    if !build.status()?.success() {
        bail!("building the examples {examples:?} of {package} failed");
    }
    let target = std::env::var("CARGO_TARGET_DIR").map_or_else(|_| root.join("target"), Into::into);
    Ok(target.join("release/examples"))
}

pub fn io(root: &Path, python: &Path, fixtures: impl Fn() -> Result<()>) -> Result<()> {
    let file = root.join("tests/fixtures-large/resnet152.pth");
    if !file.exists() {
        fixtures()?;
    }
    let examples = build_examples(root, "flambeau-serialize", &["bench_io"])?;
    check_quiet();
    let ours = Command::new(examples.join("bench_io"))
        .arg(&file)
        .arg("5")
        .output()?;
    if !ours.status.success() {
        bail!("bench_io failed: {}", String::from_utf8_lossy(&ours.stderr));
    }
    let ours = json_line(&ours.stdout)?;
    let theirs = Command::new(python)
        .arg(root.join("xtask/bench/io_torch.py"))
        .arg(&file)
        .output()?;
    if !theirs.status.success() {
        bail!(
            "the PyTorch side failed: {}",
            String::from_utf8_lossy(&theirs.stderr)
        );
    }
    let theirs = json_line(&theirs.stdout)?;
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    let size = f(&ours, "file_bytes");
    println!(
        "ResNet-152 state_dict, {:.0} MiB, {} tensors (median of several runs)",
        size / (1 << 20) as f64,
        ours["tensors"]
    );
    println!(
        "{:<42} {:>10} {:>10} {:>8}",
        "", "flambeau", "PyTorch", "ratio"
    );
    let row =
        |name: &str, a: f64, b: f64| println!("{name:<42} {a:>9.3}s {b:>9.3}s {:>8.2}", a / b);
    row(
        "load (torch.load default)",
        f(&ours, "load_s"),
        f(&theirs, "load_s"),
    );
    row(
        "load + touch every tensor (vs mmap=True)",
        f(&ours, "load_touch_first_s"),
        f(&theirs, "mmap_touch_s"),
    );
    row(
        "save, no fsync (torch.save)",
        f(&ours, "save_no_fsync_s"),
        f(&theirs, "save_s"),
    );
    println!(
        "{:<42} {:>9.3}s",
        "save, atomic with fsync (flambeau::save)",
        f(&ours, "save_atomic_fsync_s")
    );
    println!(
        "{:<42} {:>9.3}s {:>10} {:>8.2}",
        "candle::pickle::read_all",
        f(&ours, "candle_read_all_s"),
        "",
        f(&ours, "load_s") / f(&ours, "candle_read_all_s")
    );
    let (a, b) = (
        f(&ours, "peak_rss_above_baseline_bytes"),
        f(&theirs, "peak_rss_above_baseline_bytes"),
    );
    println!(
        "{:<42} {:>8.2}x {:>9.2}x   (of the file size, above the process baseline)",
        "peak resident memory",
        a / size,
        b / size
    );
    Ok(())
}
