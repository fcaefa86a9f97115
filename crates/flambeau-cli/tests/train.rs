//! `flambeau train` and `flambeau eval` as a user runs them: tiny ResNet-18 runs on the synthetic
//! data, interrupted and killed at random instants, resumed, and handed to real PyTorch.

mod common;
use common::{flambeau, text};

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use candle_core::{DType, Device};
use flambeau_core::{Value, VarStore};
use flambeau_serialize::{Checkpoint, LoadConfig};
use flambeau_testkit::{assert_same_value, run_python, torch_python};
use flambeau_vision::models::{ResNet, ResNetConfig};

/// Three batches per epoch, a few seconds per epoch in a debug build.
const TINY: [&str; 5] = ["--val-size", "16", "--batch-size", "16", "--quiet"];
const TRAIN_SIZE: &str = "48";
const EPOCHS: &str = "3";

fn command(out: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_flambeau"));
    c.arg("train").args(TINY).arg("--out").arg(out).args(extra);
    if !extra.contains(&"--epochs") {
        c.args(["--epochs", EPOCHS]);
    }
    if !extra.contains(&"--train-size") {
        c.args(["--train-size", TRAIN_SIZE]);
    }
    c
}

fn train(out: &Path, extra: &[&str]) -> String {
    let o = command(out, extra).output().unwrap();
    assert!(o.status.success(), "train {extra:?} failed:\n{}", text(&o));
    text(&o)
}

/// The uninterrupted run every resumed run must equal bit for bit.
fn straight_run() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        train(&dir, &[]);
        dir
    })
}

fn load(path: &Path) -> Value {
    flambeau_serialize::load(path, &LoadConfig::default())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Model, optimizer, scheduler, counters and data position equal the straight run's.
fn assert_same_as_straight(dir: &Path) {
    assert_same_run(straight_run(), dir);
}

/// Model, optimizer, scheduler, counters, data position and metrics of two runs are equal.
fn assert_same_run(reference: &Path, dir: &Path) {
    let (a, b) = (
        load(&reference.join("last.pth")),
        load(&dir.join("last.pth")),
    );
    for key in Checkpoint::STATE_KEYS {
        assert_same_value(a.get(key).unwrap(), b.get(key).unwrap(), key);
    }
    let csv = |d: &Path| {
        std::fs::read_to_string(d.join("metrics.csv"))
            .unwrap()
            .lines()
            .map(|l| l.rsplit_once(',').unwrap().0.to_string()) // all but the seconds column
            .collect::<Vec<_>>()
    };
    assert_eq!(csv(reference), csv(dir), "metrics.csv");
}

#[test]
fn a_run_writes_checkpoints_metrics_and_plot() {
    let dir = straight_run();
    let csv = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "epoch,train_loss,train_acc,val_loss,val_acc,lr,seconds"
    );
    assert_eq!(lines.len(), 4, "{csv}");
    for (i, line) in lines[1..].iter().enumerate() {
        let cells: Vec<f64> = line.split(',').map(|c| c.parse().unwrap()).collect();
        assert_eq!(cells[0], (i + 1) as f64);
        assert!(cells[1].is_finite() && cells[1] > 0.0, "{line}");
        assert!((0.0..=1.0).contains(&cells[4]), "{line}");
    }
    let png = image::open(dir.join("metrics.png")).unwrap();
    assert_eq!((png.width(), png.height()), (900, 380));

    // last.pth is the tutorial layout at the end of epoch 3; keep 3 epoch files.
    let ckpt = Checkpoint::load(dir.join("last.pth"), &LoadConfig::default()).unwrap();
    assert_eq!(ckpt.layout, flambeau_serialize::Layout::Tutorial);
    assert_eq!((ckpt.epoch, ckpt.global_step), (2, 9));
    assert_eq!(
        ckpt.extra.get("arch").and_then(Value::as_str),
        Some("resnet18")
    );
    assert_eq!(ckpt.model.len(), 122);
    for n in 1..=3 {
        assert!(dir.join(format!("epoch-{n:04}.pth")).is_file());
    }
    assert!(dir.join("best.pth").is_file());
    let best = Checkpoint::load(dir.join("best.pth"), &LoadConfig::default()).unwrap();
    let best_acc = ckpt.best_metric.unwrap();
    assert_eq!(best.best_metric, Some(best_acc));

    // eval reports the accuracy the last epoch's validation measured (on the run's own
    // validation set: its size and seed come from the checkpoint).
    let last_val: f64 = lines[3].split(',').nth(4).unwrap().parse().unwrap();
    let (ok, out) = flambeau(&["eval", dir.join("last.pth").to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("accuracy {:.2}% (16 images)", 100.0 * last_val)),
        "{out}"
    );
    assert!(out.contains("resnet18, after epoch 3"), "{out}");
}

#[test]
fn keep_prunes_old_epoch_files() {
    let dir = tempfile::tempdir().unwrap();
    train(dir.path(), &["--keep", "1", "--epochs", "2"]);
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "best.pth",
            "epoch-0002.pth",
            "last.pth",
            "metrics.csv",
            "metrics.png"
        ]
    );
}

#[test]
fn resume_mid_epoch_and_at_epoch_end_is_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    let out = train(dir.path(), &["--max-steps", "2"]);
    assert!(out.contains("stopped after 2 steps"), "{out}");
    let ckpt = Checkpoint::load(dir.path().join("last.pth"), &LoadConfig::default()).unwrap();
    assert_eq!((ckpt.epoch, ckpt.global_step), (-1, 2));
    let out = train(dir.path(), &["--resume", "auto", "--max-steps", "3"]);
    assert!(out.contains("epoch 1 of 3, batch 2, step 2"), "{out}");
    assert!(out.contains("epoch 1/3"), "{out}");
    train(dir.path(), &["--resume", "auto", "--max-steps", "7"]);
    let out = train(dir.path(), &["--resume", "auto"]);
    assert!(out.contains("epoch 3 of 3, batch 1, step 7"), "{out}");
    assert_same_as_straight(dir.path());

    // Nothing left to do: a clear message, no change.
    let out = train(dir.path(), &["--resume", "auto"]);
    assert!(
        out.contains("nothing to do: the run already has 3 epochs"),
        "{out}"
    );
}

#[cfg(unix)]
fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig}");
}

#[cfg(unix)]
#[test]
fn ctrl_c_saves_a_checkpoint_that_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = command(dir.path(), &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt during epoch 2: right after the line that ends epoch 1.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut printed = String::new();
    while !printed.contains("epoch 1/3") {
        assert!(stdout.read_line(&mut printed).unwrap() > 0, "{printed}");
    }
    signal(&child, "-INT");
    stdout.read_to_string(&mut printed).unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut printed)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{printed}");
    assert!(printed.contains("interrupted"), "{printed}");
    assert!(printed.contains("continue with --resume auto"), "{printed}");
    Checkpoint::load(dir.path().join("last.pth"), &LoadConfig::default()).unwrap();
    train(dir.path(), &["--resume", "auto"]);
    assert_same_as_straight(dir.path());
}

/// Waits (at most 5 minutes) until `path` exists or `child` has ended.
#[cfg(unix)]
fn wait_for_file(child: &mut Child, path: &std::path::Path) {
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    while !path.exists() && child.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "no {} after 5 minutes",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(unix)]
#[test]
fn sigkill_at_random_instants_always_leaves_a_loadable_checkpoint() {
    // 16 batches per epoch, a checkpoint after every step: long enough that eight kills land
    // before the run could finish, each at a random instant (often in the middle of a save).
    const LONGER: [&str; 2] = ["--train-size", "256"];
    let reference = tempfile::tempdir().unwrap();
    train(reference.path(), &LONGER);

    let dir = tempfile::tempdir().unwrap();
    let mut args = LONGER.to_vec();
    args.extend(["--resume", "auto", "--save-every", "1"]);
    let mut seed = 0x9e3779b97f4a7c15u64;
    let mut kills = 0;
    while kills < 8 {
        let mut child = command(dir.path(), &args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = 300 + (seed >> 33) % 1200;
        if kills == 0 {
            // On a loaded machine start-up alone can outlast every delay: the first kill waits
            // for a first save, so that some kill lands after one.
            wait_for_file(&mut child, &dir.path().join("last.pth"));
        }
        std::thread::sleep(Duration::from_millis(delay));
        if child.try_wait().unwrap().is_some() {
            break; // finished before the kill
        }
        signal(&child, "-KILL");
        child.wait().unwrap();
        kills += 1;
        let last = dir.path().join("last.pth");
        if last.exists() {
            let ckpt = Checkpoint::load(&last, &LoadConfig::default()).unwrap_or_else(|e| {
                panic!("after SIGKILL number {kills} (at {delay} ms) last.pth is broken: {e}")
            });
            assert_eq!(ckpt.model.len(), 122);
        }
    }
    assert!(
        kills >= 5,
        "only {kills} kills landed before the run finished"
    );
    let last = Checkpoint::load(dir.path().join("last.pth"), &LoadConfig::default()).unwrap();
    assert!(last.global_step > 0, "no kill landed after a save");
    eprintln!(
        "{kills} kills; the last left step {} of 48",
        last.global_step
    );
    train(
        dir.path(),
        &[LONGER.as_slice(), &["--resume", "auto"]].concat(),
    );
    assert_same_run(reference.path(), dir.path());
    let leftovers: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn init_from_skips_a_classifier_of_another_size() {
    let dir = tempfile::tempdir().unwrap();
    let vs = VarStore::with_seed(&Device::Cpu, DType::F32, 7);
    ResNet::new(vs.root(), ResNetConfig::resnet18(5)).unwrap();
    let weights = dir.path().join("pretrained.pth");
    let mut sd = vs.state_dict();
    sd = sd.add_prefix("module."); // saved from DataParallel
    flambeau_serialize::save_state_dict(&sd, &weights).unwrap();
    let out = train(
        &dir.path().join("run"),
        &["--init-from", weights.to_str().unwrap(), "--epochs", "1"],
    );
    assert!(out.contains("initialised 120 of 122 tensors"), "{out}");
    assert!(
        out.contains("skipped size mismatch for fc.weight: copying a param with shape torch.Size([5, 512]) from checkpoint, the shape in current model is torch.Size([10, 512])."),
        "{out}"
    );
    assert!(out.contains("epoch 1/1"), "{out}");
}

#[test]
fn bad_requests_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (
            &["train", "--device", "cuda:0,1", "--out", d],
            "cannot open cuda:0 (this flambeau may be built without CUDA support)",
        ),
        (
            &["train", "--data", "cifar10:/nonexistent", "--out", d],
            "must hold the binary version (data_batch_1.bin",
        ),
        (
            &["train", "--data", "imagenet", "--out", d],
            "expected `synthetic`, `cifar10:DIR` or `folder:DIR`",
        ),
        (
            &["train", "--resume", "/nonexistent/last.pth", "--out", d],
            "--resume /nonexistent/last.pth",
        ),
        (&["eval", "/nonexistent.pth"], "/nonexistent.pth"),
    ];
    for (args, expected) in cases {
        let (ok, out) = flambeau(args);
        assert!(!ok, "{args:?} succeeded");
        assert!(out.contains(expected), "{args:?}:\n{out}");
        assert!(!out.contains("panicked"), "{args:?}:\n{out}");
    }

    // A file without any state dict: the error lists what is there.
    let odd = dir.path().join("odd.pth");
    let mut d2 = flambeau_core::Dict::new(flambeau_core::DictKind::Plain);
    d2.insert("weights_v2", Value::Int(3));
    d2.insert("notes", "hello");
    flambeau_serialize::save(&Value::Dict(d2), &odd).unwrap();
    let (ok, out) = flambeau(&["train", "--resume", odd.to_str().unwrap(), "--out", d]);
    assert!(!ok);
    assert!(
        out.contains("top-level keys: weights_v2 (int), notes (str)"),
        "{out}"
    );

    // --arch contradicting the checkpoint.
    let (ok, out) = flambeau(&[
        "eval",
        straight_run().join("last.pth").to_str().unwrap(),
        "--arch",
        "resnet50",
    ]);
    assert!(!ok);
    assert!(
        out.contains("--arch resnet50, but the checkpoint holds a resnet18"),
        "{out}"
    );
}

#[test]
fn pytorch_continues_a_flambeau_checkpoint_with_the_tutorial_recipe() {
    let Some(python) =
        torch_python("pytorch_continues_a_flambeau_checkpoint_with_the_tutorial_recipe")
    else {
        return;
    };
    let script = include_str!("python/continue_in_pytorch.py");
    // After epoch 1 of 3 (at the end of the run the cosine schedule has reached lr 0).
    let first = straight_run().join("epoch-0001.pth");
    let printed = run_python(&python, script, &[first.to_str().unwrap()]);
    assert!(printed.starts_with("epoch=0 step=3 lr=0.015 "), "{printed}");
}

#[test]
fn flambeau_resumes_a_pytorch_training_checkpoint() {
    let Some(python) = torch_python("flambeau_resumes_a_pytorch_training_checkpoint") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pth = dir.path().join("torchvision_checkpoint.pth");
    let printed = run_python(
        &python,
        include_str!("python/pytorch_checkpoint.py"),
        &[pth.to_str().unwrap()],
    );
    assert!(printed.contains("lr=0.05"), "{printed}");
    let run = dir.path().join("run");
    let out = train(&run, &["--resume", pth.to_str().unwrap(), "--epochs", "3"]);
    assert!(
        out.contains("(torchvision references layout (model/optimizer/lr_scheduler/args)): epoch 2 of 3, batch 0, step 0"),
        "{out}"
    );
    assert!(out.contains("Sgd lr 0.05, Step schedule"), "{out}");
    // StepLR(step_size=1, gamma=0.5) continues: 0.05 during epoch 2, halved after each epoch.
    let csv = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let lrs: Vec<&str> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(5).unwrap())
        .collect();
    assert_eq!(lrs, ["0.025", "0.0125"], "{csv}");
    let ckpt = Checkpoint::load(run.join("last.pth"), &LoadConfig::default()).unwrap();
    let sched = ckpt.scheduler.unwrap();
    assert_eq!(sched.get("last_epoch").and_then(Value::as_i64), Some(3));
    assert_eq!(sched.get("step_size").and_then(Value::as_i64), Some(1));
    let opt = ckpt.optimizer.unwrap();
    let group = &opt.get("param_groups").unwrap().as_seq().unwrap()[0];
    assert_eq!(
        group.get("weight_decay").and_then(Value::as_f64),
        Some(1e-4)
    );
    assert_eq!(group.get("nesterov").and_then(Value::as_bool), Some(false));
    assert_eq!(opt.get("state").unwrap().as_dict().unwrap().len(), 62);
}

#[test]
fn replicas_train_resume_on_other_counts_and_refuse_bad_combinations() {
    let dir = tempfile::tempdir().unwrap();
    let out = train(dir.path(), &["--replicas", "2", "--epochs", "1"]);
    assert!(
        out.contains("data parallel: 2 replicas on cpu, per-replica batch 8, 8"),
        "{out}"
    );
    // The same run continues on three replicas (16 = 6 + 6 + 4), then on one device.
    let out = train(
        dir.path(),
        &["--replicas", "3", "--epochs", "2", "--resume", "auto"],
    );
    assert!(out.contains("per-replica batch 6, 6, 4"), "{out}");
    let out = train(dir.path(), &["--epochs", "3", "--resume", "auto"]);
    assert!(!out.contains("data parallel"), "{out}");
    let ckpt = Checkpoint::from_value(&load(&dir.path().join("last.pth"))).unwrap();
    assert_eq!(ckpt.epoch, 2);
    assert_eq!(ckpt.model.keys().next(), Some("conv1.weight"), "plain keys");
    let (ok, out) = flambeau(&["eval", dir.path().join("last.pth").to_str().unwrap()]);
    assert!(ok, "{out}");

    for (flags, expected) in [
        (
            &["--replicas", "17"][..],
            "17 replicas for a batch of 16: every replica needs at least one sample",
        ),
        (
            &["--replicas", "0"][..],
            "must be a positive whole number, got 0",
        ),
        (&["--device", "cuda:1,1"][..], "cuda:1 is listed twice"),
    ] {
        let fresh = tempfile::tempdir().unwrap();
        let o = command(fresh.path(), flags).output().unwrap();
        let out = text(&o);
        assert!(
            !o.status.success() && out.contains(expected),
            "{flags:?}: {out}"
        );
        assert!(!out.contains("panicked"), "{out}");
    }
}

#[test]
fn a_launch_of_one_process_on_the_cpu_trains_alone() {
    // torchrun --nproc-per-node 1 (or mpirun -np 1) on the CPU: nothing to exchange with.
    let dir = tempfile::tempdir().unwrap();
    let o = command(dir.path(), &["--epochs", "1"])
        .envs([
            ("RANK", "0"),
            ("WORLD_SIZE", "1"),
            ("MASTER_ADDR", "localhost"),
            ("MASTER_PORT", "29563"),
        ])
        .output()
        .unwrap();
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(!out.contains("distributed:"), "{out}");
    assert!(dir.path().join("last.pth").exists());
}
