//! StateDict's key tools and the order of state_dict()/parameters() against PyTorch.

use candle_core::{DType, Device, Tensor};
use flambeau_core::{KeyRule, StateDict, VarStore};
use flambeau_nn::{BatchNorm2d, BatchNormConfig, Conv2d, Conv2dConfig, Linear};
use flambeau_testkit::{fixture, load_json};

fn sd(keys: &[&str]) -> StateDict {
    keys.iter()
        .map(|k| {
            (
                k.to_string(),
                Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap(),
            )
        })
        .collect()
}

fn keys(sd: &StateDict) -> Vec<&str> {
    sd.keys().collect()
}

#[test]
fn prefix_tools() {
    let s = sd(&["module.a.weight", "module.b", "c"]);
    assert_eq!(
        keys(&s.strip_prefix("module.").unwrap()),
        ["a.weight", "b", "c"]
    );
    assert_eq!(
        keys(&s.add_prefix("net.")),
        ["net.module.a.weight", "net.module.b", "net.c"]
    );
}

#[test]
fn strip_prefix_moves_metadata_prefixes_too() {
    let mut s = sd(&["module.bn.weight"]);
    s.set_metadata(vec![
        ("".into(), 1),
        ("module".into(), 1),
        ("module.bn".into(), 2),
    ]);
    let out = s.strip_prefix("module.").unwrap();
    assert_eq!(out.module_version("bn"), Some(2));
}

#[test]
fn regex_rename_drop_and_keep() {
    let s = sd(&[
        "features.0.weight",
        "features.1.weight",
        "classifier.weight",
    ]);
    let r = s.rename_regex(r"^features\.(\d+)\.", "layer$1.").unwrap();
    assert_eq!(
        keys(&r),
        ["layer0.weight", "layer1.weight", "classifier.weight"]
    );
    assert_eq!(
        keys(&s.drop_matching("^classifier").unwrap()),
        ["features.0.weight", "features.1.weight"]
    );
    assert_eq!(
        keys(&s.keep_only(["classifier.weight", "nope"])),
        ["classifier.weight"]
    );
    assert!(s.rename_regex("(", "x").is_err());
}

#[test]
fn dtype_and_device_conversion_keep_integer_buffers() {
    let mut s = sd(&["w"]);
    s.insert(
        "num_batches_tracked",
        Tensor::new(3i64, &Device::Cpu).unwrap(),
    );
    let h = s.to_dtype(DType::F16).unwrap();
    assert_eq!(h.get("w").unwrap().dtype(), DType::F16);
    assert_eq!(h.get("num_batches_tracked").unwrap().dtype(), DType::I64);
    assert_eq!(h.to_device(&Device::Cpu).unwrap().len(), 2);
}

#[test]
fn key_rules_compose_in_order() {
    let s = sd(&["module._orig_mod.fc.weight"]);
    let mut out = s.clone();
    for r in [
        KeyRule::strip_prefix("module."),
        KeyRule::strip_prefix("_orig_mod."),
    ] {
        out = r.apply(&out, &[]).unwrap();
    }
    assert_eq!(keys(&out), ["fc.weight"]);
    assert_eq!(
        KeyRule::strip_prefix("module.").to_string(),
        r#"KeyRule::strip_prefix("module.")"#
    );
}

/// The model of the fixture `Small` (see xtask/fixtures/core.py), built with flambeau layers.
fn small() -> VarStore {
    let vs = VarStore::new(&Device::Cpu, DType::F32);
    let f = vs.root().pp("features");
    Conv2d::new(
        f.pp(0),
        3,
        4,
        3,
        Conv2dConfig {
            padding: 1,
            bias: false,
            ..Default::default()
        },
    )
    .unwrap();
    BatchNorm2d::new(f.pp(1), 4, BatchNormConfig::default()).unwrap();
    let inner = f.pp(3);
    Conv2d::new(
        inner.pp(0),
        4,
        4,
        3,
        Conv2dConfig {
            groups: 2,
            ..Default::default()
        },
    )
    .unwrap();
    BatchNorm2d::new(inner.pp(1), 4, BatchNormConfig::default()).unwrap();
    Linear::new(vs.root().pp("fc"), 4, 10, true).unwrap();
    let f3 = vs.root().pp("f3");
    f3.share_param("weight", &vs.get("fc.weight").unwrap())
        .unwrap();
    f3.share_param("bias", &vs.get("fc.bias").unwrap()).unwrap();
    // Root buffers are registered after the children in PyTorch's __init__, but state_dict puts
    // a module's own buffers before its children, as this store does.
    vs.root()
        .buffer(
            "scale",
            Tensor::ones(2, DType::F32, &Device::Cpu).unwrap(),
            true,
        )
        .unwrap();
    vs.root()
        .buffer(
            "tmp",
            Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap(),
            false,
        )
        .unwrap();
    vs
}

#[test]
fn state_dict_order_names_and_shapes_match_pytorch() {
    let expected = load_json(&fixture("flambeau-nn", "nn/small_model.json"));
    let vs = small();
    let got: Vec<(String, Vec<usize>)> = vs
        .state_dict()
        .iter()
        .map(|(k, t)| (k.to_string(), t.dims().to_vec()))
        .collect();
    let want: Vec<(String, Vec<usize>)> = expected["state_dict"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e[0].as_str().unwrap().to_string(),
                e[1].as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap() as usize)
                    .collect(),
            )
        })
        .collect();
    assert_eq!(got, want);
    let names: Vec<String> = vs.named_parameters().into_iter().map(|(n, _)| n).collect();
    let want_names: Vec<String> = expected["named_parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, want_names, "parameters() lists the shared fc once");
    let buffers: Vec<String> = vs.named_buffers().into_iter().map(|(n, _)| n).collect();
    let want_buffers: Vec<String> = expected["named_buffers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        buffers, want_buffers,
        "non-persistent buffers are buffers, not state"
    );
    assert_eq!(
        vs.state_dict()
            .get("features.1.num_batches_tracked")
            .unwrap()
            .dtype(),
        DType::I64
    );
}

#[test]
fn duplicate_and_invalid_names_are_errors() {
    let vs = VarStore::new(&Device::Cpu, DType::F32);
    Linear::new(vs.root().pp("fc"), 2, 2, true).unwrap();
    let err = Linear::new(vs.root().pp("fc"), 2, 2, true).unwrap_err();
    assert!(
        err.to_string().contains("duplicate name `fc.weight`"),
        "{err}"
    );
    assert!(Linear::new(vs.root().pp("a.b"), 2, 2, true).is_err());
}

#[test]
fn varmap_holds_trainable_parameters_once() {
    let vs = small();
    assert_eq!(vs.varmap().all_vars().len(), vs.parameters().len());
}
