//! Reading real torch.save files: zip and legacy formats, every dtype, views, sharing,
//! training checkpoints with inert objects, whole pickled modules, GPU-saved files.

use std::collections::HashMap;

use candle_core::{DType, Tensor};
use flambeau_serialize::{find_state_dict, load, load_state_dict_file, LoadConfig, Value};
use flambeau_testkit::{assert_close, fixture, load_json, load_tensors, to_f64_vec};

fn file(name: &str) -> std::path::PathBuf {
    fixture("flambeau-serialize", &format!("serialize/{name}"))
}

fn expected() -> HashMap<String, Tensor> {
    load_tensors(&file("expected.safetensors"))
}

fn open(name: &str) -> Value {
    load(file(name), &LoadConfig::default()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn assert_same_values(what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    assert_eq!(to_f64_vec(got), to_f64_vec(want), "{what}: values");
}

#[test]
fn state_dicts_in_zip_legacy_and_protocol_4_read_exactly() {
    let exp = expected();
    for name in [
        "zip_state_dict.pth",
        "legacy_state_dict.pth",
        "protocol4.pth",
        "cuda1.pth",
    ] {
        let v = open(name);
        let found = find_state_dict(&v).unwrap();
        assert_eq!(found.layout, "a bare state_dict", "{name}");
        let keys: Vec<&str> = found.state_dict.keys().collect();
        assert_eq!(
            keys,
            [
                "conv.weight",
                "conv.bias",
                "bn.weight",
                "bn.bias",
                "bn.running_mean",
                "bn.running_var",
                "bn.num_batches_tracked",
                "fc.weight",
                "fc.bias"
            ],
            "{name}: order"
        );
        for (k, t) in found.state_dict.iter() {
            assert_same_values(&format!("{name} {k}"), t, &exp[&format!("sd/{k}")]);
        }
        assert_eq!(
            found
                .state_dict
                .get("bn.num_batches_tracked")
                .unwrap()
                .dtype(),
            DType::I64
        );
        // `_metadata` came along: BatchNorm is version 2.
        assert_eq!(found.state_dict.module_version("bn"), Some(2), "{name}");
    }
}

#[test]
fn every_dtype_reads_with_its_values() {
    let json = load_json(&file("expected.json"));
    for name in ["dtypes.pth", "dtypes_legacy.pth"] {
        let v = open(name);
        let d = v.as_dict().unwrap();
        for (k, vals) in json["dtypes"].as_object().unwrap() {
            let got = match d.get(k) {
                Some(Value::Tensor(t)) => to_f64_vec(t),
                // int8 and bool: candle has no such dtype, so they stay raw (and exact).
                Some(Value::RawTensor(r)) => r.to_f64_vec().unwrap().unwrap(),
                _ => panic!("{name}: {k}"),
            };
            let want: Vec<f64> = vals
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            assert_eq!(got, want, "{name}: {k}");
        }
        let dt = |k: &str| d.get(k).unwrap().as_tensor().unwrap().dtype();
        assert_eq!(
            (dt("f16"), dt("bf16"), dt("i32")),
            (DType::F16, DType::BF16, DType::I32)
        );
        let raw = |k: &str| d.get(k).unwrap().as_raw_tensor().unwrap().dtype.clone();
        assert_eq!((raw("i8"), raw("bool")), ("int8".into(), "bool".into()));
    }
}

#[test]
fn views_offsets_strides_scalars_and_sharing() {
    let exp = expected();
    let v = open("views.pth");
    let d = v.as_dict().unwrap();
    for (k, t) in &d.entries {
        let k = k.as_str().unwrap();
        assert_same_values(k, t.as_tensor().unwrap(), &exp[&format!("views/{k}")]);
    }
    assert_eq!(
        d.get("scalar").unwrap().as_tensor().unwrap().dims(),
        &[] as &[usize]
    );
    assert_eq!(d.get("empty").unwrap().as_tensor().unwrap().dims(), &[0, 3]);
    // Tied weights still share one storage after reading.
    let ptr = |k: &str| {
        let t = d.get(k).unwrap().as_tensor().unwrap();
        let (s, _) = t.storage_and_layout();
        &*s as *const _ as usize
    };
    assert_eq!(ptr("tied_a"), ptr("tied_b"));
    assert_eq!(ptr("base"), ptr("row"));
}

#[test]
fn training_checkpoint_with_inert_objects_opens() {
    let exp = expected();
    let json = load_json(&file("expected.json"));
    let v = open("checkpoint.pth");
    assert_eq!(v.get("epoch").unwrap().as_i64(), Some(5));
    assert_eq!(v.get("loss").unwrap().as_f64(), Some(0.25));
    assert_eq!(v.get("name").unwrap().as_str(), Some("run-1"));
    match v.get("blob").unwrap() {
        Value::Bytes(b) => assert_eq!(
            b.iter().map(|&x| x as u64).collect::<Vec<_>>(),
            json["checkpoint"]["blob"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap())
                .collect::<Vec<_>>()
        ),
        other => panic!("blob: {other:?}"),
    }
    assert!(matches!(v.get("big").unwrap(), Value::BigInt(_)));
    match v.get("args").unwrap() {
        Value::Object(o) => {
            assert_eq!(o.class, "argparse.Namespace");
            let state = o.state.as_deref().unwrap();
            assert_eq!(state.get("arch").unwrap().as_str(), Some("resnet18"));
        }
        other => panic!("args: {other:?}"),
    }
    match v.get("best_acc").unwrap() {
        Value::Object(o) => assert!(o.class.contains("numpy"), "{}", o.class),
        other => panic!("best_acc: {other:?}"),
    }
    let counter = v.get("milestones").unwrap().as_dict().unwrap();
    assert_eq!(counter.kind, flambeau_serialize::DictKind::Counter);
    assert_eq!(
        counter.get_value(&Value::Int(60)).unwrap().as_i64(),
        Some(2)
    );
    let found = find_state_dict(&v).unwrap();
    assert_eq!(found.location, "model_state_dict");
    for (k, t) in found.state_dict.iter() {
        assert_same_values(k, t, &exp[&format!("ckpt_model/{k}")]);
    }
    let state = v
        .get("optimizer_state_dict")
        .unwrap()
        .get("state")
        .unwrap()
        .as_dict()
        .unwrap();
    let buf = state
        .get_value(&Value::Int(0))
        .unwrap()
        .get("momentum_buffer")
        .unwrap()
        .as_tensor()
        .unwrap();
    assert_same_values("momentum", buf, &exp["ckpt_momentum/0"]);
}

#[test]
fn whole_pickled_module_yields_its_state_dict() {
    let exp = expected();
    let v = open("whole_model.pth");
    let found = find_state_dict(&v).unwrap();
    assert!(found.layout.contains("whole pickled nn.Module"));
    let keys: Vec<&str> = found.state_dict.keys().collect();
    assert_eq!(keys.len(), 9);
    for (k, t) in found.state_dict.iter() {
        assert_same_values(k, t, &exp[&format!("ckpt_model/{k}")]);
    }
}

#[test]
fn dataparallel_file_and_load_state_dict_file() {
    let sd = load_state_dict_file(file("dataparallel.pth"), &LoadConfig::default()).unwrap();
    assert!(sd.keys().all(|k| k.starts_with("module.")));
    let sd = load_state_dict_file(file("checkpoint.pth"), &LoadConfig::default()).unwrap();
    assert_eq!(sd.len(), 9);
}

#[test]
fn no_state_dict_lists_the_top_level_keys() {
    let v = Value::dict([("epoch", Value::Int(3)), ("notes", Value::Str("x".into()))]);
    let err = find_state_dict(&v).unwrap_err().to_string();
    assert!(err.contains("epoch (int), notes (str)"), "{err}");
}

#[test]
fn gpu_saved_file_opens_on_the_cpu() {
    let v = open("cuda1.pth");
    let t = v.get("fc.weight").unwrap().as_tensor().unwrap();
    assert!(t.device().is_cpu());
    assert_close("cuda1", t, &expected()["sd/fc.weight"], 0.0, 0.0);
}
