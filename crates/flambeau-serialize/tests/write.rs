//! Writing: flambeau → flambeau round trips, the archive layout PyTorch expects, and the round
//! trip through real PyTorch (`torch.load(path)` with its defaults, i.e. weights_only=True).

use candle_core::{DType, Device, Tensor};
use flambeau_serialize::{
    load, save, save_state_dict, to_bytes, Dict, DictKind, LoadConfig, StateDict, Value,
};
use flambeau_testkit::{run_python, to_f64_vec, torch_python};

fn sample_value() -> Value {
    let base = Tensor::arange(0f32, 24.0, &Device::Cpu)
        .unwrap()
        .reshape((4, 6))
        .unwrap();
    let mut sd = Dict::new(DictKind::Ordered);
    sd.insert("w", base.clone());
    sd.insert("row", base.narrow(0, 1, 1).unwrap().squeeze(0).unwrap());
    sd.insert("t", base.t().unwrap());
    sd.insert("half", base.to_dtype(DType::F16).unwrap());
    sd.insert("bf", base.to_dtype(DType::BF16).unwrap());
    sd.insert("f64", base.to_dtype(DType::F64).unwrap());
    sd.insert("count", Tensor::new(7i64, &Device::Cpu).unwrap());
    sd.insert("mask", Tensor::new(&[1u8, 0, 1], &Device::Cpu).unwrap());
    sd.insert(
        "ids",
        Tensor::new(&[1u32, 4_000_000_000], &Device::Cpu).unwrap(),
    );
    sd.insert(
        "empty",
        Tensor::zeros((0, 3), DType::F32, &Device::Cpu).unwrap(),
    );
    let mut meta = Dict::new(DictKind::Ordered);
    meta.insert("", Value::dict([("version", Value::Int(1))]));
    sd.attrs = Some(Box::new(Value::dict([("_metadata", Value::Dict(meta))])));
    let mut counter = Dict::new(DictKind::Counter);
    counter.insert(Value::Int(30), Value::Int(1));
    Value::dict([
        ("model_state_dict", Value::Dict(sd)),
        ("epoch", Value::Int(3)),
        ("big", Value::Int(-(1 << 40))),
        ("lr", Value::Float(0.1)),
        ("name", Value::Str("run-ü".into())),
        ("flags", Value::Tuple(vec![Value::Bool(true), Value::None])),
        ("list", Value::List((0..2500).map(Value::Int).collect())),
        ("blob", Value::Bytes(vec![0, 255, 10])),
        ("milestones", Value::Dict(counter)),
        ("device", Value::Device("cpu".into())),
        ("dtype", Value::Dtype("float32".into())),
    ])
}

#[test]
fn flambeau_reads_back_what_it_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ckpt.pth");
    let v = sample_value();
    save(&v, &path).unwrap();
    let back = load(&path, &LoadConfig::default()).unwrap();
    let sd = back.get("model_state_dict").unwrap().as_dict().unwrap();
    let orig = v.get("model_state_dict").unwrap().as_dict().unwrap();
    for ((k, a), (_, b)) in sd.entries.iter().zip(&orig.entries) {
        let (a, b) = (a.as_tensor().unwrap(), b.as_tensor().unwrap());
        assert_eq!(a.dims(), b.dims(), "{k:?}");
        assert_eq!(to_f64_vec(a), to_f64_vec(b), "{k:?}");
    }
    assert_eq!(back.get("epoch").unwrap().as_i64(), Some(3));
    assert_eq!(back.get("big").unwrap().as_i64(), Some(-(1 << 40)));
    assert_eq!(back.get("name").unwrap().as_str(), Some("run-ü"));
    assert_eq!(back.get("list").unwrap().as_seq().unwrap().len(), 2500);
    assert!(matches!(back.get("blob"), Some(Value::Bytes(b)) if b == &[0, 255, 10]));
    let sd = StateDict::from_value(back.get("model_state_dict").unwrap()).unwrap();
    assert_eq!(sd.module_version(""), Some(1));
    // No temporary file is left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn records_are_stored_64_byte_aligned_and_shared_storages_written_once() {
    let bytes = to_bytes(&sample_value()).unwrap();
    let zip = flambeau_serialize_zip_entries(&bytes);
    let names: Vec<&str> = zip.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names[0], "archive/data.pkl");
    assert_eq!(names[1], "archive/byteorder");
    assert_eq!(*names.last().unwrap(), "archive/version");
    for (name, start) in &zip {
        assert_eq!(start % 64, 0, "{name} starts at {start}");
    }
    // w, row and t share one storage; the f16/bf16/f64/count/mask/ids/empty copies have their own.
    let storages = names
        .iter()
        .filter(|n| n.starts_with("archive/data/"))
        .count();
    assert_eq!(storages, 8);
}

/// (name, data offset) of each record, parsed independently of the library.
fn flambeau_serialize_zip_entries(bytes: &[u8]) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while bytes[at..at + 4] == [0x50, 0x4b, 0x03, 0x04] {
        let u16_at = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]) as usize;
        let size = u32::from_le_bytes(bytes[at + 18..at + 22].try_into().unwrap()) as usize;
        let (n, e) = (u16_at(at + 26), u16_at(at + 28));
        let name = String::from_utf8(bytes[at + 30..at + 30 + n].to_vec()).unwrap();
        let start = at + 30 + n + e;
        out.push((name, start));
        at = start + size;
    }
    out
}

#[test]
fn objects_are_refused_with_a_reason() {
    let v = Value::dict([(
        "args",
        Value::Object(flambeau_serialize::Object {
            class: "argparse.Namespace".into(),
            args: vec![],
            state: None,
        }),
    )]);
    let err = to_bytes(&v).unwrap_err().to_string();
    assert!(
        err.contains("argparse.Namespace") && err.contains("weights_only"),
        "{err}"
    );
}

const CHECK: &str = r#"
import sys, json, torch
ck = torch.load(sys.argv[1])  # PyTorch's defaults: weights_only=True
sd = ck["model_state_dict"]
out = {k: {"dtype": str(v.dtype), "shape": list(v.shape), "values": v.double().flatten().tolist(),
           "ptr": v.untyped_storage().data_ptr(), "stride": list(v.stride()), "offset": v.storage_offset()}
       for k, v in sd.items()}
print(json.dumps({"sd": out, "type": type(sd).__name__, "metadata": getattr(sd, "_metadata", None) is not None,
                  "epoch": ck["epoch"], "big": ck["big"], "lr": ck["lr"], "name": ck["name"], "flags": ck["flags"],
                  "list": len(ck["list"]), "blob": list(ck["blob"]), "milestones": dict(ck["milestones"]),
                  "counter": type(ck["milestones"]).__name__, "device": str(ck["device"]), "dtype": str(ck["dtype"])}))
"#;

#[test]
fn torch_load_opens_flambeau_files_with_default_settings() {
    let Some(python) = torch_python("torch_load_opens_flambeau_files_with_default_settings") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("from_flambeau.pth");
    let v = sample_value();
    save(&v, &path).unwrap();
    let out = run_python(&python, CHECK, &[path.to_str().unwrap()]);
    let j: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(j["type"], "OrderedDict");
    assert_eq!(j["metadata"], true);
    assert_eq!(j["epoch"], 3);
    assert_eq!(j["big"], -(1i64 << 40));
    assert_eq!(j["lr"], 0.1);
    assert_eq!(j["name"], "run-ü");
    assert_eq!(j["flags"], serde_json::json!([true, null]));
    assert_eq!(j["list"], 2500);
    assert_eq!(j["blob"], serde_json::json!([0, 255, 10]));
    assert_eq!(j["milestones"], serde_json::json!({"30": 1}));
    assert_eq!(j["counter"], "Counter");
    assert_eq!(
        (j["device"].as_str(), j["dtype"].as_str()),
        (Some("cpu"), Some("torch.float32"))
    );
    let sd = &j["sd"];
    let orig = v.get("model_state_dict").unwrap().as_dict().unwrap();
    for (k, t) in &orig.entries {
        let k = k.as_str().unwrap();
        let t = t.as_tensor().unwrap();
        let got: Vec<f64> = sd[k]["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(got, to_f64_vec(t), "{k}");
        let shape: Vec<usize> = sd[k]["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(shape, t.dims(), "{k}");
    }
    assert_eq!(sd["half"]["dtype"], "torch.float16");
    assert_eq!(sd["bf"]["dtype"], "torch.bfloat16");
    assert_eq!(sd["count"]["dtype"], "torch.int64");
    assert_eq!(sd["ids"]["dtype"], "torch.uint32", "u32 keeps its dtype");
    // Views stay views of one storage, with their strides and offsets.
    assert_eq!(sd["w"]["ptr"], sd["row"]["ptr"]);
    assert_eq!(sd["w"]["ptr"], sd["t"]["ptr"]);
    assert_eq!(sd["t"]["stride"], serde_json::json!([1, 6]));
    assert_eq!(sd["row"]["offset"], 6);
}

#[test]
fn save_state_dict_then_pytorch_load_state_dict() {
    let Some(python) = torch_python("save_state_dict_then_pytorch_load_state_dict") else {
        return;
    };
    let vs = flambeau_core::VarStore::new(&Device::Cpu, DType::F32);
    flambeau_nn::Conv2d::new(vs.root().pp("conv"), 3, 4, 3, Default::default()).unwrap();
    flambeau_nn::BatchNorm2d::new(vs.root().pp("bn"), 4, Default::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sd.pth");
    save_state_dict(&vs.state_dict(), &path).unwrap();
    let script = r#"
import sys, torch, torch.nn as nn
m = nn.Sequential()
m.conv = nn.Conv2d(3, 4, 3); m.bn = nn.BatchNorm2d(4)
print(m.load_state_dict(torch.load(sys.argv[1])))
print(float(m.conv.weight.sum()))
"#;
    let out = run_python(&python, script, &[path.to_str().unwrap()]);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("<All keys matched successfully>"));
    let sum: f64 = lines.next().unwrap().parse().unwrap();
    let ours = vs
        .get("conv.weight")
        .unwrap()
        .as_tensor()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap() as f64;
    assert!((sum - ours).abs() < 1e-5, "{sum} vs {ours}");
}
