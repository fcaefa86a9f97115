//! `flambeau doctor` and `flambeau diff` on the classic failures, in files made by real PyTorch
//! (`cargo xtask fixtures doctor`; the ResNet-18 ones with `--large`): exit codes, the printed
//! fix run as printed, and the result loading strictly — in flambeau, and in PyTorch when it is
//! installed.

mod common;
use common::flambeau_code;

use std::path::{Path, PathBuf};

use flambeau_testkit::{fixture, large_fixture, run_python, torch_python};

/// The committed fixtures, copied to a scratch directory (the fix writes next to its input).
fn scratch() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("flambeau-cli", "doctor");
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
    }
    let root = dir.path().to_path_buf();
    (dir, root)
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Runs doctor with `--json`; returns its exit code and report.
fn doctor(file: &Path, target: &[&str]) -> (i32, serde_json::Value) {
    let mut args = vec!["doctor", file.to_str().unwrap(), "--json"];
    args.extend(target);
    let (code, out) = flambeau_code(&args);
    (code, json(&out))
}

/// Runs the report's convert line (its argument list) and returns the file it wrote.
fn run_fix(report: &serde_json::Value) -> PathBuf {
    let argv: Vec<String> = report["fix"]["convert"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let mut args = vec!["convert"];
    args.extend(argv.iter().map(String::as_str));
    let (code, out) = flambeau_code(&args);
    assert_eq!(code, 0, "{out}");
    PathBuf::from(&argv[1])
}

/// (file, exit code, words the report must hold).
const CASES: &[(&str, i32, &str)] = &[
    ("ok.pth", 0, "loads"),
    ("pre_1_2_batchnorm.pth", 0, "predate them"),
    ("dataparallel.pth", 1, "--strip-prefix module."),
    ("compiled.pth", 1, "--strip-prefix _orig_mod."),
    (
        "lightning.ckpt",
        1,
        "--select state_dict --strip-prefix model.",
    ),
    ("training.pth", 1, "--select model_state_dict"),
    ("head100.pth", 1, "only the head `fc` differs"),
    ("no_counters.pth", 1, "num_batches_tracked"),
    ("scripted.pt", 1, "TorchScript"),
    ("whole_model.pth", 1, "whole pickled model"),
    ("cuda.pth", 1, "cuda:0"),
];

#[test]
fn doctor_names_each_classic_failure_and_its_fix_loads() {
    let (_dir, root) = scratch();
    let reference = root.join("reference.pth");
    let model = ["--model", reference.to_str().unwrap()];
    let mut fixed_files = Vec::new();
    for (file, code, words) in CASES {
        let (got, report) = doctor(&root.join(file), &model);
        assert_eq!(got, *code, "{file}: {report:#}");
        assert!(report.to_string().contains(words), "{file}: {report:#}");
        assert_eq!(report["exit_code"], *code);
        if *code == 0 {
            assert!(report["fix"].is_null(), "{file}: {report:#}");
            continue;
        }
        assert!(!report["pytorch_says"].is_null(), "{file}: {report:#}");
        let fixed = run_fix(&report);
        let (after, again) = doctor(&fixed, &model);
        if *file == "head100.pth" {
            // A new head: the fix drops the old one, and the model loads with strict=False.
            assert_eq!(report["fix"]["strict"], false);
            assert_eq!(after, 1, "{again:#}");
            let says = again["pytorch_says"].as_str().unwrap();
            assert!(
                says.contains(r#"Missing key(s) in state_dict: "fc.weight", "fc.bias". "#),
                "{says}"
            );
            assert!(!says.contains("size mismatch"), "{says}");
        } else {
            assert_eq!(after, 0, "{file} → {}: {again:#}", fixed.display());
            fixed_files.push((file.to_string(), fixed));
        }
    }

    // The fixed files load strictly in PyTorch too, with torch.load's defaults.
    let Some(python) = torch_python("doctor_names_each_classic_failure_and_its_fix_loads") else {
        return;
    };
    let script = r#"
import sys, torch, torch.nn as nn
from safetensors.torch import load_file
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 10)
for path in sys.argv[1:]:
    sd = load_file(path) if path.endswith(".safetensors") else torch.load(path)
    print(path, Net().load_state_dict(sd))
"#;
    let paths: Vec<&str> = fixed_files
        .iter()
        .map(|(_, p)| p.to_str().unwrap())
        .collect();
    let printed = run_python(&python, script, &paths);
    assert_eq!(
        printed.matches("<All keys matched successfully>").count(),
        paths.len(),
        "{printed}"
    );
}

#[test]
fn doctor_on_resnet18_files_made_by_pytorch() {
    let Some(ok) = large_fixture("doctor/resnet18_ok.pth") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let arch = ["--arch", "resnet18", "--num-classes", "10"];
    let (code, report) = doctor(&ok, &arch);
    assert_eq!(code, 0, "{report:#}");
    // Without --num-classes: torchvision's 1000, and the checkpoint's head says 10.
    let (code, report) = doctor(&ok, &["--arch", "resnet18"]);
    assert_eq!(code, 1, "{report:#}");
    assert!(report["pytorch_says"]
        .as_str()
        .unwrap()
        .contains("size mismatch for fc.weight: copying a param with shape torch.Size([10, 512]) from checkpoint, the shape in current model is torch.Size([1000, 512])."));
    assert!(
        report.to_string().contains("--num-classes 10"),
        "{report:#}"
    );

    for (file, words) in [
        ("dataparallel.pth", "--strip-prefix module."),
        ("compiled.pth", "--strip-prefix _orig_mod."),
        ("lightning.ckpt", "--strip-prefix model."),
        ("training.pth", "--select model_state_dict"),
        ("no_counters.pth", "num_batches_tracked"),
        ("scripted.pt", "torch.jit.load"),
        ("whole_model.pth", "torchvision.models.resnet.ResNet"),
        ("cuda.pth", "map_location"),
    ] {
        let Some(src) = large_fixture(&format!("doctor/resnet18_{file}")) else {
            return;
        };
        let path = dir.path().join(file);
        std::fs::copy(&src, &path).unwrap();
        let (code, report) = doctor(&path, &arch);
        assert_eq!(code, 1, "{file}: {report:#}");
        assert!(report.to_string().contains(words), "{file}: {report:#}");
        let fixed = run_fix(&report);
        let (code, again) = doctor(&fixed, &arch);
        assert_eq!(code, 0, "{file}: {again:#}");
        std::fs::remove_file(fixed).unwrap();
    }
    let (code, report) = doctor(
        &large_fixture("doctor/resnet18_head100.pth").unwrap(),
        &arch,
    );
    assert_eq!(code, 1, "{report:#}");
    // The pre-1.2 file loads as is, into the bigger architecture not at all.
    let (code, _) = doctor(
        &large_fixture("doctor/resnet18_pre_1_2_batchnorm.pth").unwrap(),
        &arch,
    );
    assert_eq!(code, 0);
    let (code, report) = doctor(&ok, &["--arch", "resnet50", "--num-classes", "10"]);
    assert_eq!(code, 2, "{report:#}");
    assert!(report["fix"].is_null());
}

#[test]
fn doctor_text_quotes_pytorch() {
    let dp = fixture("flambeau-cli", "doctor/dataparallel.pth");
    let reference = fixture("flambeau-cli", "doctor/reference.pth");
    let (code, out) = flambeau_code(&[
        "doctor",
        dp.to_str().unwrap(),
        "--model",
        reference.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("RuntimeError: Error(s) in loading state_dict for Module:\n  \tMissing key(s) in state_dict: \"conv1.weight\""), "{out}");
    assert!(
        out.contains("consume_prefix_in_state_dict_if_present(sd, \"module.\")"),
        "{out}"
    );
    assert!(out.contains("verdict: does not load as is"), "{out}");
}

#[test]
fn diff_on_files_made_by_pytorch() {
    let f = |n: &str| fixture("flambeau-cli", &format!("doctor/{n}"));
    let s = |p: &PathBuf| p.to_str().unwrap().to_string();
    let (ok, dp, fp16, bias, head) = (
        s(&f("ok.pth")),
        s(&f("dataparallel.pth")),
        s(&f("ok_fp16.pth")),
        s(&f("changed_bias.pth")),
        s(&f("head100.pth")),
    );
    // The same weights under DataParallel's names: identical once the rule is applied.
    let (code, out) = flambeau_code(&["diff", &dp, &ok]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("key rule: B = A with `module.` stripped"),
        "{out}"
    );
    assert!(
        out.contains("values: 0 of 8 common tensors differ"),
        "{out}"
    );

    let (code, out) = flambeau_code(&["diff", &ok, &bias, "--json"]);
    assert_eq!(code, 1, "{out}");
    let d = json(&out);
    let changed: Vec<_> = d["values"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["max_abs"].as_f64().unwrap() > 0.0)
        .collect();
    assert_eq!(changed.len(), 1, "{d:#}");
    assert_eq!(changed[0]["key"], "fc.bias");
    assert!((changed[0]["max_abs"].as_f64().unwrap() - 0.25).abs() < 1e-6);

    let expected = json(&std::fs::read_to_string(f("expected.json")).unwrap());
    let (code, out) = flambeau_code(&["diff", &ok, &fp16, "--json"]);
    assert_eq!(code, 1, "{out}");
    let d = json(&out);
    assert_eq!(d["dtype_differs"].as_array().unwrap().len(), 7, "{d:#}");
    assert_eq!(d["dtype_differs"][0]["b"]["dtype"], "float16");
    let max_abs = d["max_abs"].as_f64().unwrap();
    assert!(
        (max_abs - expected["fp16_max_abs"].as_f64().unwrap()).abs() < 1e-9,
        "{d:#}"
    );

    let (code, out) = flambeau_code(&["diff", &ok, &head]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("fc.weight: [10, 4] in A, [100, 4] in B"),
        "{out}"
    );
}

#[test]
fn bad_inputs_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.pth");
    std::fs::write(&text, "not a checkpoint").unwrap();
    let (text, missing) = (text.to_str().unwrap(), "/nonexistent/model.pth");
    let ok = fixture("flambeau-cli", "doctor/ok.pth");
    let ok = ok.to_str().unwrap();
    for (args, words) in [
        (vec!["doctor", missing, "--arch", "resnet18"], "model.pth"),
        (vec!["doctor", text, "--arch", "resnet18"], "not a"),
        (
            vec!["doctor", ok, "--arch", "resnet9"],
            "unknown architecture `resnet9`",
        ),
        (vec!["doctor", ok, "--model", missing], "model.pth"),
        (vec!["diff", missing, ok], "model.pth"),
        (vec!["diff", ok, text], "notes.pth"),
    ] {
        let (code, out) = flambeau_code(&args);
        assert_eq!(code, 2, "{args:?}: {out}");
        assert!(out.contains(words), "{args:?}: {out}");
        assert!(!out.contains("panicked"), "{args:?}: {out}");
    }
    let (code, out) = flambeau_code(&["doctor", text, "--arch", "resnet18", "--json"]);
    assert_eq!(code, 2);
    assert_eq!(json(&out)["exit_code"], 2);
    // Neither --arch nor --model: clap's usage error.
    let (code, out) = flambeau_code(&["doctor", ok]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("--arch"), "{out}");
}
