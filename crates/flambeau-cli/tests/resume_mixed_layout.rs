//! `flambeau train --resume` from a PyTorch checkpoint in the common mixed layout
//! (`model_state_dict`, `optimizer_state_dict`, `lr_scheduler`) continues the StepLR schedule
//! with PyTorch's learning rates, epoch for epoch.

mod common;

use std::process::Command;

use flambeau_testkit::{run_python, torch_python};

#[test]
fn a_mixed_layout_checkpoint_resumes_with_pytorchs_learning_rates() {
    let Some(python) =
        torch_python("a_mixed_layout_checkpoint_resumes_with_pytorchs_learning_rates")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pth = dir.path().join("mixed.pth");
    // Resumed at epoch 2 of 4: three more epochs, three scheduler steps.
    let printed = run_python(
        &python,
        include_str!("python/mixed_layout_checkpoint.py"),
        &[pth.to_str().unwrap(), "3"],
    );
    let expected: serde_json::Value = serde_json::from_str(printed.trim()).unwrap();
    let expected: Vec<f64> = expected["next"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let run = dir.path().join("run");
    let out = Command::new(env!("CARGO_BIN_EXE_flambeau"))
        .args(["train", "--val-size", "16", "--batch-size", "16", "--quiet"])
        .args(["--train-size", "48", "--epochs", "4", "--scheduler", "step"])
        .arg("--resume")
        .arg(&pth)
        .arg("--out")
        .arg(&run)
        .output()
        .unwrap();
    let text = common::text(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("epoch 2 of 4"), "{text}");
    assert!(text.contains("Step schedule"), "{text}");
    let csv = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let col = header
        .iter()
        .position(|h| *h == "lr")
        .expect("an lr column");
    let lrs: Vec<f64> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(col).unwrap().parse().unwrap())
        .collect();
    assert_eq!(lrs.len(), expected.len(), "{csv}");
    for (got, want) in lrs.iter().zip(&expected) {
        assert!(
            (got - want).abs() <= 1e-12 * want.abs(),
            "flambeau {lrs:?}, PyTorch {expected:?}\n{csv}"
        );
    }
}
