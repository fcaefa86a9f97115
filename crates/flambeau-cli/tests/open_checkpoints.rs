//! `eval` and `train --init-from` open any file that holds a ResNet: a DataParallel state dict
//! written by real PyTorch, and `.safetensors`.

mod common;
use common::flambeau;

use std::path::Path;

use candle_core::{DType, Device};
use flambeau_core::VarStore;
use flambeau_testkit::{run_python, torch_python};
use flambeau_vision::models::{ResNet, ResNetConfig};

/// A one-epoch run in `dir/run` that starts from `weights`.
fn init_from(weights: &Path, dir: &Path) -> (bool, String) {
    let (weights, out) = (weights.to_str().unwrap(), dir.join("run"));
    let tiny = [
        "--train-size",
        "16",
        "--val-size",
        "16",
        "--batch-size",
        "16",
    ];
    let mut args = vec!["train", "--init-from", weights, "--epochs", "1", "--quiet"];
    args.extend(tiny);
    args.extend(["--out", out.to_str().unwrap()]);
    flambeau(&args)
}

#[test]
fn eval_opens_a_dataparallel_checkpoint_made_by_pytorch() {
    let Some(python) = torch_python("eval_opens_a_dataparallel_checkpoint_made_by_pytorch") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pth = dir.path().join("dataparallel_resnet18.pth");
    let printed = run_python(
        &python,
        include_str!("python/dataparallel_resnet.py"),
        &[pth.to_str().unwrap()],
    );
    assert!(printed.contains("fc.bias="), "{printed}");
    let (ok, out) = flambeau(&["eval", pth.to_str().unwrap(), "--val-size", "16"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("resnet18, no training state — accuracy"),
        "{out}"
    );
    assert!(out.contains("(16 images)"), "{out}");

    // The same file initialises a fine-tuning run: every tensor, names unwrapped.
    let (ok, out) = init_from(&pth, dir.path());
    assert!(ok, "{out}");
    assert!(out.contains("initialised 122 of 122 tensors"), "{out}");
}

#[test]
fn eval_and_init_from_accept_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let vs = VarStore::with_seed(&Device::Cpu, DType::F32, 5);
    ResNet::new(vs.root(), ResNetConfig::resnet18(10)).unwrap();
    let file = dir.path().join("weights.safetensors");
    flambeau_serialize::safetensors::save(&vs.state_dict(), &file).unwrap();

    let (ok, out) = flambeau(&["eval", file.to_str().unwrap(), "--val-size", "16"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("resnet18, no training state — accuracy"),
        "{out}"
    );

    let (ok, out) = init_from(&file, dir.path());
    assert!(ok, "{out}");
    assert!(out.contains("initialised 122 of 122 tensors"), "{out}");
    assert!(out.contains("epoch 1/1"), "{out}");
}
