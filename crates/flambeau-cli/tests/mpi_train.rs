//! `mpirun -np N flambeau train` (feature `mpi`): every rank reads its shard, rank 0 alone
//! writes; runs repeat bit for bit; a run moves between world sizes (2 → 1 → 3) at a constant
//! global batch; the death of one rank ends the job and leaves the last checkpoint loadable.
//! `cargo test -p flambeau-cli --features mpi --test mpi_train` (run by `cargo xtask test`).
#![cfg(feature = "mpi")]

mod common;
use common::text;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use flambeau_serialize::{Checkpoint, LoadConfig};
use flambeau_testkit::{assert_same_value, skip};

/// 48 synthetic images, two global batches of 24 per epoch.
const DATA: [&str; 6] = [
    "--train-size",
    "48",
    "--val-size",
    "16",
    "--quiet",
    "--keep",
];

fn has_mpirun() -> bool {
    let ok = Command::new("mpirun")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        skip("mpirun is not installed (cargo xtask mpi setup): the MPI training tests did not run");
    }
    ok
}

/// `flambeau train` under `mpirun -np np` (alone when `np` is 1), with batch `24 / np`.
fn train(np: usize, out: &Path, extra: &[&str]) -> Output {
    let batch = (24 / np).to_string();
    let mut c = if np == 1 {
        Command::new(env!("CARGO_BIN_EXE_flambeau"))
    } else {
        let mut c = flambeau_testkit::mpirun(np);
        c.arg(env!("CARGO_BIN_EXE_flambeau"));
        c
    };
    c.arg("train")
        .args(DATA)
        .arg("2")
        .args(["--batch-size", &batch, "--out"])
        .arg(out)
        .args(extra);
    c.output().unwrap()
}

fn train_ok(np: usize, out: &Path, extra: &[&str]) -> String {
    let o = train(np, out, extra);
    assert!(
        o.status.success(),
        "{np} ranks {extra:?} failed:\n{}",
        text(&o)
    );
    text(&o)
}

fn checkpoint(dir: &Path) -> Checkpoint {
    let v = flambeau_serialize::load(dir.join("last.pth"), &LoadConfig::default()).unwrap();
    Checkpoint::from_value(&v).unwrap()
}

#[test]
fn ranks_write_once_repeat_exactly_and_move_between_world_sizes() {
    if !has_mpirun() {
        return;
    }
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let out = train_ok(2, a.path(), &["--epochs", "2"]);
    assert_eq!(
        out.matches("distributed: 2 processes launched by mpirun")
            .count(),
        1,
        "rank 0 alone speaks:\n{out}"
    );
    assert!(
        out.contains("per-process batch 12, global batch 24"),
        "{out}"
    );
    let csv = std::fs::read_to_string(a.path().join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "written once per epoch:\n{csv}");
    // MPI's sums are deterministic for a rank count: the same run, bit for bit.
    train_ok(2, b.path(), &["--epochs", "2"]);
    let (x, y) = (checkpoint(a.path()), checkpoint(b.path()));
    assert_same_value(&x.model.to_value(), &y.model.to_value(), "model");
    assert_same_value(
        x.optimizer.as_ref().unwrap(),
        y.optimizer.as_ref().unwrap(),
        "optimizer",
    );
    assert_eq!((x.epoch, x.global_step), (1, 4));

    // 2 ranks for an epoch, 1 process for the next, 3 ranks for the last: global batch 24.
    let c = tempfile::tempdir().unwrap();
    train_ok(2, c.path(), &["--epochs", "1"]);
    train_ok(1, c.path(), &["--epochs", "2", "--resume", "auto"]);
    let out = train_ok(3, c.path(), &["--epochs", "3", "--resume", "auto"]);
    assert!(
        out.contains("per-process batch 8, global batch 24"),
        "{out}"
    );
    let z = checkpoint(c.path());
    assert_eq!((z.epoch, z.global_step), (2, 6));
    assert_eq!(z.model.keys().next(), Some("conv1.weight"), "plain keys");
}

#[test]
fn a_killed_rank_ends_the_job_and_the_last_checkpoint_loads() {
    if !has_mpirun() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = flambeau_testkit::mpirun(2)
        .arg(env!("CARGO_BIN_EXE_flambeau"))
        .arg("train")
        .args([
            "--train-size",
            "480",
            "--val-size",
            "16",
            "--quiet",
            "--keep",
            "2",
        ])
        .args([
            "--batch-size",
            "8",
            "--epochs",
            "3",
            "--save-every",
            "2",
            "--out",
        ])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let last = dir.path().join("last.pth");
    let started = Instant::now();
    while !last.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no checkpoint"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The ranks are mpirun's children (or its daemon's): kill the last flambeau among them.
    let ranks = descendants(child.id())
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "flambeau")
        })
        .collect::<Vec<_>>();
    assert_eq!(ranks.len(), 2, "two ranks running: {ranks:?}");
    let killed = Command::new("kill")
        .args(["-9", &ranks[1].to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "mpirun still running 60 s after a rank died"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success(), "mpirun reports the dead rank");
    let ckpt = checkpoint(dir.path());
    assert!(
        ckpt.global_step >= 2,
        "a real checkpoint: step {}",
        ckpt.global_step
    );
}

/// Every process below `pid` (from /proc's children lists).
fn descendants(pid: u32) -> Vec<u32> {
    let mut all = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let tasks = std::fs::read_dir(format!("/proc/{p}/task"))
            .into_iter()
            .flatten();
        for t in tasks.flatten() {
            let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            for c in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                all.push(c);
                todo.push(c);
            }
        }
    }
    all
}
