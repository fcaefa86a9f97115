//! `cargo xtask bench parallel`: the cost of data-parallel training over CPU replicas against
//! the plain one-device step (ResNet-18, batch 32 of the synthetic 3×32×32 set, SGD), and the
//! time of a step's collectives alone. The replicas share this machine's cores, so the ratio is
//! the overhead of replication (split, per-shard passes, broadcast and reduce), not a speed-up.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::bench::{build_examples, check_quiet, json_line};

/// Timed steps per configuration and round, and rounds (the configurations alternate).
const STEPS: usize = 5;
const ROUNDS: usize = 4;

pub fn parallel(root: &Path) -> Result<()> {
    let examples = build_examples(root, "flambeau-parallel", &["bench_parallel"])?;
    check_quiet();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let out = Command::new(examples.join("bench_parallel"))
        .args([STEPS.to_string(), ROUNDS.to_string()])
        .env("RAYON_NUM_THREADS", threads.to_string())
        .output()
        .context("starting bench_parallel")?;
    if !out.status.success() {
        bail!(
            "bench_parallel failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v = json_line(&out.stdout)?;
    let ms = |name: &str, k: &str| 1e3 * v[name][k].as_f64().unwrap_or(f64::NAN);
    let plain = ms("plain", "median_s");
    println!(
        "ResNet-18 train step, batch {} of 3x32x32, SGD; {threads} threads shared by every replica.\n\
         Median (p10–p90) of {} steps per configuration, {ROUNDS} alternating rounds after one warm-up round.\n",
        v["batch"],
        STEPS * ROUNDS
    );
    println!(
        "{:<44} {:>9} {:>17} {:>9}",
        "configuration", "ms/step", "p10–p90 ms", "vs plain"
    );
    for (name, title) in [
        ("plain", "one device (forward, backward, SGD step)"),
        ("group1", "ReplicaGroup, 1 CPU replica"),
        ("group2", "ReplicaGroup, 2 CPU replicas"),
        ("group3", "ReplicaGroup, 3 CPU replicas"),
        ("collectives2", "collectives alone, 2 ranks"),
        ("collectives3", "collectives alone, 3 ranks"),
    ] {
        let m = ms(name, "median_s");
        println!(
            "{title:<44} {m:>9.1} {:>8.1}–{:<8.1} {:>8.2}x",
            ms(name, "p10_s"),
            ms(name, "p90_s"),
            m / plain
        );
    }
    println!(
        "\ncollectives alone: the broadcast of the {:.1} MB of parameters and buffers from rank 0 and the\n\
         reduce of the gradients to it (host-staged), as ReplicaGroup::step does them.\n\
         The replicas share the same {threads} cores: the ratios measure overhead, not speed-up.",
        v["param_bytes"].as_f64().unwrap_or(f64::NAN) / 1e6
    );
    Ok(())
}
