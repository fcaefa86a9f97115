//! `cargo xtask bench train`: ResNet training and eval throughput of flambeau, PyTorch (when
//! installed) and plain candle on the same workloads, one after the other, same thread count.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::bench::{build_examples, check_quiet, json_line};

/// One workload: what the three programs are asked to run.
struct Workload {
    title: &'static str,
    arch: &'static str,
    mode: &'static str,
    batch: usize,
    size: usize,
    steps: usize,
}

const WORKLOADS: [Workload; 3] = [
    Workload {
        title: "ResNet-18 train, batch 32, 3x32x32",
        arch: "resnet18",
        mode: "train",
        batch: 32,
        size: 32,
        steps: 20,
    },
    Workload {
        title: "ResNet-50 train, batch 32, 3x32x32",
        arch: "resnet50",
        mode: "train",
        batch: 32,
        size: 32,
        steps: 10,
    },
    Workload {
        title: "ResNet-18 eval, batch 8, 3x224x224",
        arch: "resnet18",
        mode: "eval",
        batch: 8,
        size: 224,
        steps: 10,
    },
];

fn run_json(mut cmd: Command, who: &str) -> Result<Value> {
    let out = cmd.output().with_context(|| format!("starting {who}"))?;
    if !out.status.success() {
        bail!("{who} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    json_line(&out.stdout).with_context(|| format!("reading {who}'s result"))
}

/// A Python that imports torch: the xtask venv, else `python3`; `None` when neither has it.
fn torch_python(venv_python: &Path) -> Option<PathBuf> {
    [venv_python.to_path_buf(), PathBuf::from("python3")]
        .into_iter()
        .find(|p| {
            Command::new(p)
                .args(["-c", "import torch, torchvision"])
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

/// Runs of each program per workload; the best is reported.
const ROUNDS: usize = 3;

fn keep_best(best: &mut Option<Value>, run: Value) {
    if best.as_ref().is_none_or(|b| img_s(&run) > img_s(b)) {
        *best = Some(run);
    }
}

fn img_s(v: &Value) -> f64 {
    v["img_s"].as_f64().unwrap_or(f64::NAN)
}

pub fn train(root: &Path, venv_python: &Path) -> Result<()> {
    let examples = build_examples(
        root,
        "flambeau-vision",
        &["bench_train", "bench_train_candle"],
    )?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let python = torch_python(venv_python);
    if python.is_none() {
        eprintln!(
            "NOTE: PyTorch is not installed (run `cargo xtask setup`): its column stays empty"
        );
    }
    check_quiet();
    println!(
        "{threads} threads; img/s: the median of several steps after 3 warm-up steps, best of {ROUNDS} alternating runs\n"
    );
    println!(
        "{:<36} {:>9} {:>9} {:>9} {:>10} {:>10}",
        "workload", "flambeau", "PyTorch", "candle", "vs PyTorch", "vs candle"
    );
    let mut phases = Vec::new();
    for w in &WORKLOADS {
        let args = [
            w.arch.to_string(),
            w.mode.to_string(),
            w.batch.to_string(),
            w.size.to_string(),
            w.steps.to_string(),
        ];
        // Alternate the three programs for a few rounds and keep each one's best run: on a
        // shared machine, noise only ever slows a run down.
        let (mut ours, mut candle, mut torch): (Option<Value>, Option<Value>, Option<Value>) =
            (None, None, None);
        for _ in 0..ROUNDS {
            let mut c = Command::new(examples.join("bench_train"));
            c.args(&args).env("RAYON_NUM_THREADS", threads.to_string());
            keep_best(&mut ours, run_json(c, "flambeau")?);
            if let Some(py) = &python {
                let mut c = Command::new(py);
                c.arg(root.join("xtask/bench/train_torch.py"))
                    .args(&args)
                    .arg(threads.to_string());
                keep_best(&mut torch, run_json(c, "PyTorch")?);
            }
            let mut c = Command::new(examples.join("bench_train_candle"));
            c.args(&args).env("RAYON_NUM_THREADS", threads.to_string());
            keep_best(&mut candle, run_json(c, "plain candle")?);
        }
        let (ours, candle) = (ours.expect("ran"), candle.expect("ran"));
        let (a, c) = (img_s(&ours), img_s(&candle));
        let t = torch.as_ref().map_or(f64::NAN, img_s);
        println!(
            "{:<36} {a:>9.1} {t:>9.1} {c:>9.1} {:>9.2}x {:>9.2}x",
            w.title,
            a / t,
            a / c
        );
        if w.mode == "train" {
            let ms = |k: &str| 1e3 * ours[k].as_f64().unwrap_or(f64::NAN);
            phases.push(format!(
                "  {}: forward {:.0} ms, backward {:.0} ms, optimizer {:.0} ms",
                w.title,
                ms("forward_s"),
                ms("backward_s"),
                ms("update_s")
            ));
        }
    }
    // The data loader must keep up: the ResNet-18 step fed by the synthetic loader (with
    // augmentation) against the same step on one in-memory batch, alternated.
    let (mut memory, mut fed) = (None, None);
    for _ in 0..ROUNDS {
        for (best, extra) in [(&mut memory, None), (&mut fed, Some("loader"))] {
            let mut c = Command::new(examples.join("bench_train"));
            c.args(["resnet18", "train", "32", "32", "20"])
                .args(extra)
                .env("RAYON_NUM_THREADS", threads.to_string());
            keep_best(best, run_json(c, "flambeau, loader comparison")?);
        }
    }
    let (memory, fed) = (img_s(&memory.expect("ran")), img_s(&fed.expect("ran")));
    println!(
        "\nResNet-18 train fed by the DataLoader: {fed:.1} img/s, from one in-memory batch: {memory:.1} img/s ({:.2}x)",
        fed / memory
    );
    println!("\nflambeau step breakdown:");
    for p in phases {
        println!("{p}");
    }
    println!("\nplain candle: 2x2/2 stem max-pool in training (no backward for 3x3/2), SGD without momentum");
    Ok(())
}
