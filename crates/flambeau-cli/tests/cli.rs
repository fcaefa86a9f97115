//! The `flambeau` binary as a user runs it: inspect and convert on real PyTorch files.

mod common;
use common::flambeau;

use std::path::PathBuf;

use flambeau_testkit::{fixture, run_python, torch_python};

fn file(name: &str) -> String {
    fixture("flambeau-serialize", &format!("serialize/{name}"))
        .to_string_lossy()
        .into_owned()
}

#[test]
fn inspect_describes_a_training_checkpoint() {
    let (ok, out) = flambeau(&["inspect", &file("checkpoint.pth")]);
    assert!(ok, "{out}");
    assert!(
        out.contains("a training checkpoint (model under 'model_state_dict', 9 tensors)"),
        "{out}"
    );
    assert!(
        out.contains("conv.weight: float32 [4, 3, 3, 3] 432 B"),
        "{out}"
    );
    assert!(
        out.contains("args: argparse.Namespace (inert object"),
        "{out}"
    );
    assert!(out.contains("arch: str \"resnet18\""), "{out}");
    assert!(
        out.contains("momentum_buffer: float32 [4, 3, 3, 3]"),
        "{out}"
    );
}

#[test]
fn inspect_recognises_dataparallel_and_shared_storage() {
    let (_, out) = flambeau(&["inspect", &file("dataparallel.pth")]);
    assert!(out.contains("DataParallel"), "{out}");
    let (_, out) = flambeau(&["inspect", &file("views.pth")]);
    assert!(
        out.contains("tied_b: float32 [3, 4] 48 B (shares storage with tied_a)"),
        "{out}"
    );
    let (_, out) = flambeau(&["inspect", &file("whole_model.pth")]);
    assert!(out.contains("whole pickled nn.Module"), "{out}");
}

#[test]
fn inspect_json_prints_one_object_per_tensor_with_stats() {
    let (ok, out) = flambeau(&["inspect", "--json", "--stats", &file("zip_state_dict.pth")]);
    assert!(ok, "{out}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 9);
    let bn = lines
        .iter()
        .find(|l| l["key"] == "bn.num_batches_tracked")
        .unwrap();
    assert_eq!(
        (bn["dtype"].as_str(), bn["sum"].as_f64()),
        (Some("int64"), Some(7.0))
    );
    assert_eq!(lines[0]["shape"], serde_json::json!([4, 3, 3, 3]));
}

#[test]
fn errors_are_clear() {
    let (ok, out) = flambeau(&["inspect", "/nonexistent.pth"]);
    assert!(!ok && out.contains("/nonexistent.pth"), "{out}");
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("x.pth");
    std::fs::write(&bogus, b"hello").unwrap();
    let (ok, out) = flambeau(&["inspect", bogus.to_str().unwrap()]);
    assert!(!ok && out.contains("not a PyTorch checkpoint"), "{out}");
}

#[test]
fn convert_to_safetensors_with_select_and_prefix_surgery() {
    let dir = tempfile::tempdir().unwrap();
    let out_path: PathBuf = dir.path().join("model.safetensors");
    let (ok, out) = flambeau(&[
        "convert",
        &file("dataparallel.pth"),
        out_path.to_str().unwrap(),
        "--strip-prefix",
        "module.",
        "--dtype",
        "float16",
    ]);
    assert!(ok, "{out}");
    let sd = flambeau_serialize::safetensors::load(&out_path, &candle_core::Device::Cpu).unwrap();
    assert!(sd.keys().all(|k| !k.starts_with("module.")));
    assert_eq!(
        sd.get("conv.weight").unwrap().dtype(),
        candle_core::DType::F16
    );
    assert_eq!(
        sd.get("bn.num_batches_tracked").unwrap().dtype(),
        candle_core::DType::I64
    );
    let (ok, out) = flambeau(&[
        "convert",
        &file("checkpoint.pth"),
        out_path.to_str().unwrap(),
        "--select",
        "nope",
    ]);
    assert!(
        !ok && out.contains("the file has: epoch, model_state_dict"),
        "{out}"
    );
}

#[test]
fn convert_makes_a_refused_checkpoint_loadable_by_torch_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("clean.pth");
    let (ok, out) = flambeau(&[
        "convert",
        &file("checkpoint.pth"),
        out_path.to_str().unwrap(),
        "--rename",
        r"^fc\.=head.",
    ]);
    assert!(ok, "{out}");
    assert!(
        out.contains("args: argparse.Namespace → dict of its 3 fields"),
        "{out}"
    );
    assert!(
        out.contains("best_acc: numpy") && out.contains("→ float 0.9375"),
        "{out}"
    );
    let back = flambeau_serialize::load(&out_path, &Default::default()).unwrap();
    let sd = back.get("model_state_dict").unwrap().as_dict().unwrap();
    assert!(sd.get("head.weight").is_some());
    let Some(python) =
        torch_python("convert_makes_a_refused_checkpoint_loadable_by_torch_defaults")
    else {
        return;
    };
    let script = "import sys, torch\nc = torch.load(sys.argv[1])\nprint(c['best_acc'], c['args']['arch'], sorted(c['model_state_dict'])[:2])";
    let printed = run_python(&python, script, &[out_path.to_str().unwrap()]);
    assert_eq!(
        printed.trim(),
        "0.9375 resnet18 ['bn.bias', 'bn.num_batches_tracked']"
    );
}

fn formats(name: &str) -> String {
    fixture("flambeau-serialize", &format!("formats/{name}"))
        .to_string_lossy()
        .into_owned()
}

#[test]
fn inspect_shows_each_exotic_tensor_with_its_real_dtype_and_stats_do_not_hang() {
    let (ok, out) = flambeau(&["inspect", &formats("every_dtype.pth")]);
    assert!(ok, "{out}");
    for line in [
        "i8: int8 [4]",
        "bool: bool [3]",
        "u64: uint64 [3]",
        "c128: complex128 [2, 2]",
        "f8e5m2: float8_e5m2 [4]",
        "f8e4m3: float8_e4m3fn [6]",
        "q_u8: quint8 [4] 4 B (quantized) scale 0.1 zero_point 3",
        "q_channel: qint8 [2, 2] 4 B (quantized) per_channel_affine axis 0",
        "coo: float32 [2, 3]",
        "(sparse_coo)",
        "csr: float32 [2, 3]",
    ] {
        assert!(out.contains(line), "missing {line:?} in\n{out}");
    }
    assert!(!out.contains("weights_only refuses"), "{out}");
    let started = std::time::Instant::now();
    let (ok, out) = flambeau(&["inspect", "--json", "--stats", &formats("every_dtype.pth")]);
    assert!(ok, "{out}");
    assert!(
        started.elapsed().as_secs() < 20,
        "inspect --stats took {:?}",
        started.elapsed()
    );
    let f8: serde_json::Value = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|o| o["key"] == "f8e4m3")
        .unwrap();
    assert_eq!(f8["dtype"], "float8_e4m3fn");
    assert_eq!(
        (f8["min"].as_f64(), f8["max"].as_f64()),
        (Some(-2.0), Some(448.0))
    );
}

#[test]
fn inspect_says_what_a_torchscript_archive_and_a_sharded_checkpoint_are() {
    let (ok, out) = flambeau(&["inspect", &formats("scripted.pt")]);
    assert!(ok, "{out}");
    assert!(out.contains("format: TorchScript archive"), "{out}");
    assert!(out.contains("inner.lin.weight: float32 [2, 3]"), "{out}");
    let (ok, out) = flambeau(&["inspect", &formats("sharded_bin")]);
    assert!(ok, "{out}");
    assert!(
        out.contains("format: sharded checkpoint: 3 shards"),
        "{out}"
    );
    assert!(out.contains("head.bias: float32 [3]"), "{out}");
}

#[test]
fn convert_keeps_int8_and_friends_and_writes_shards() {
    let dir = tempfile::tempdir().unwrap();
    let out_pth = dir.path().join("back.pth");
    let (ok, out) = flambeau(&[
        "convert",
        &formats("every_dtype.pth"),
        out_pth.to_str().unwrap(),
        "--add-prefix",
        "m.",
    ]);
    assert!(ok, "{out}");
    let (ok, out) = flambeau(&["inspect", out_pth.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(
        out.contains("m.i8: int8 [4]") && out.contains("m.q_i32: qint32 [2]"),
        "{out}"
    );
    let out_st = dir.path().join("ints.safetensors");
    let (ok, out) = flambeau(&[
        "convert",
        &formats("small_ints.safetensors"),
        out_st.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    let (ok, out) = flambeau(&["inspect", out_st.to_str().unwrap()]);
    assert!(
        ok && out.contains("i8: int8 [4]") && out.contains("u16: uint16 [3]"),
        "{out}"
    );
    let sharded = dir.path().join("model.safetensors");
    let (ok, out) = flambeau(&[
        "convert",
        &formats("sharded_expected.pth"),
        sharded.to_str().unwrap(),
        "--max-shard-size",
        "600B",
    ]);
    assert!(ok, "{out}");
    assert!(
        dir.path()
            .join("model-00003-of-00003.safetensors")
            .is_file(),
        "{out}"
    );
    assert!(
        dir.path().join("model.safetensors.index.json").is_file(),
        "{out}"
    );
    let (ok, out) = flambeau(&[
        "convert",
        &formats("sharded_expected.pth"),
        "x.safetensors",
        "--max-shard-size",
        "big",
    ]);
    assert!(!ok && out.contains("500MB"), "{out}");
}
