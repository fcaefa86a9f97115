//! `flambeau train` and `eval` as a careless user drives them: a second run into the same
//! directory, a start that fails, nonsense numbers, a resume with other data.

mod common;
use common::flambeau;

use std::path::Path;

/// A one-epoch run small enough for a test.
fn train(out: &Path, extra: &[&str]) -> (bool, String) {
    let mut args = vec![
        "train",
        "--out",
        out.to_str().unwrap(),
        "--arch",
        "resnet18",
        "--epochs",
        "1",
        "--train-size",
        "64",
        "--val-size",
        "16",
        "--batch-size",
        "32",
        "--quiet",
    ];
    args.extend_from_slice(extra);
    flambeau(&args)
}

#[test]
fn a_second_run_into_the_same_directory_is_refused_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let (ok, out) = train(&run, &[]);
    assert!(ok, "{out}");
    let last = std::fs::read(run.join("last.pth")).unwrap();
    let csv = std::fs::read(run.join("metrics.csv")).unwrap();

    let (ok, out) = train(&run, &["--seed", "1"]);
    assert!(!ok, "a second run overwrote the first:\n{out}");
    assert!(out.contains("already holds a run"), "{out}");
    assert!(
        out.contains("--resume auto") && out.contains("--force"),
        "{out}"
    );
    assert_eq!(std::fs::read(run.join("last.pth")).unwrap(), last);
    assert_eq!(std::fs::read(run.join("metrics.csv")).unwrap(), csv);

    let (ok, out) = train(&run, &["--seed", "1", "--force"]);
    assert!(ok, "{out}");
    assert_ne!(std::fs::read(run.join("last.pth")).unwrap(), last);
}

#[test]
fn a_start_that_fails_leaves_no_run_directory() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let (ok, out) = train(&run, &["--data", "cifar10:/nonexistent"]);
    assert!(!ok, "{out}");
    assert!(!run.exists(), "an empty run directory was left behind");
}

#[test]
fn nonsense_numbers_get_messages_about_the_flag_given() {
    let cases: [(&[&str], &str, &str); 4] = [
        (
            &["train", "--batch-size", "-1"],
            "must be a positive whole number, got -1",
            "unexpected argument",
        ),
        (
            &["train", "--train-size", "0"],
            "must be a positive whole number, got 0",
            "panicked",
        ),
        (
            &["eval", "x.pth", "--val-size", "0"],
            "must be a positive whole number, got 0",
            "--train-size",
        ),
        (
            &["eval", "x.pth", "--device", "cuda:0,1"],
            "evaluating on several GPUs at once is not available",
            "training",
        ),
    ];
    for (args, expected, absent) in cases {
        let (ok, out) = flambeau(args);
        assert!(!ok, "{args:?} succeeded");
        assert!(out.contains(expected), "{args:?}:\n{out}");
        assert!(!out.contains(absent), "{args:?} mentions {absent}:\n{out}");
    }
}

#[test]
fn resuming_with_other_data_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let (ok, out) = train(&run, &["--max-steps", "1"]);
    assert!(ok, "{out}");
    let (ok, out) = flambeau(&[
        "train",
        "--out",
        run.to_str().unwrap(),
        "--resume",
        "auto",
        "--epochs",
        "1",
        "--train-size",
        "96",
        "--val-size",
        "16",
        "--batch-size",
        "32",
        "--seed",
        "5",
        "--quiet",
    ]);
    assert!(ok, "{out}");
    assert!(
        out.contains("warning: the run was started with --train-size 64, this command says 96"),
        "{out}"
    );
    assert!(out.contains("note: --seed 5 is ignored"), "{out}");
}
