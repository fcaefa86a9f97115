//! Files PyTorch opens beyond a plain torch.save: records re-zipped with deflate, every dtype
//! and layout, sharded checkpoints and TorchScript archives — each made by real PyTorch
//! (`cargo xtask fixtures formats`).

use flambeau_serialize::{find_state_dict, load, load_bytes, Error, LoadConfig, Value};
use flambeau_testkit::{fixture, to_f64_vec};

fn file(name: &str) -> std::path::PathBuf {
    fixture("flambeau-serialize", &format!("formats/{name}"))
}

fn open(name: &str) -> Value {
    load(file(name), &LoadConfig::default()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn a_pth_rezipped_with_deflate_reads_like_the_original() {
    let deflated = find_state_dict(&open("deflated.pth")).unwrap().state_dict;
    let keys: Vec<&str> = deflated.keys().collect();
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
        ]
    );
    assert_eq!(
        to_f64_vec(deflated.get("bn.running_var").unwrap()),
        vec![1.0; 4]
    );
    assert_eq!(deflated.get("conv.weight").unwrap().dims(), [4, 3, 3, 3]);
}

/// Flips one byte inside the first deflated record's compressed data.
fn corrupt_first_deflated_record(data: &mut [u8]) {
    // Local header: name length at 26, extra length at 28, data at 30 + both.
    let n = u16::from_le_bytes([data[26], data[27]]) as usize;
    let e = u16::from_le_bytes([data[28], data[29]]) as usize;
    let start = 30 + n + e;
    data[start + 3] ^= 0x55;
}

#[test]
fn a_corrupt_deflated_record_is_a_clear_error() {
    let mut data = std::fs::read(file("deflated.pth")).unwrap();
    corrupt_first_deflated_record(&mut data);
    let err = load_bytes(&data, &LoadConfig::default()).unwrap_err();
    assert!(matches!(err, Error::Zip(_)), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("corrupt") && msg.contains("data.pkl"), "{msg}");
}

#[test]
fn a_deflated_record_that_lies_about_its_size_is_refused_before_allocating() {
    let mut data = std::fs::read(file("deflated.pth")).unwrap();
    // The central directory's first record: uncompressed size at +24.
    let cd = (0..data.len() - 4)
        .find(|&i| data[i..i + 4] == [0x50, 0x4b, 0x01, 0x02])
        .unwrap();
    data[cd + 24..cd + 28].copy_from_slice(&0x7fff_fff0u32.to_le_bytes());
    let msg = load_bytes(&data, &LoadConfig::default())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("more than DEFLATE can expand"), "{msg}");
}

fn every_dtype_json() -> serde_json::Value {
    flambeau_testkit::load_json(&file("every_dtype.json"))
}

/// PyTorch's name of what a value holds, and its shape.
fn dtype_and_shape(v: &Value) -> (String, Vec<usize>) {
    match v {
        Value::Tensor(t) => {
            let name = match t.dtype() {
                candle_core::DType::F32 => "float32",
                candle_core::DType::U32 => "uint32",
                candle_core::DType::F8E4M3 => "float8_e4m3fn",
                other => panic!("unexpected candle dtype {other:?}"),
            };
            (name.to_string(), t.dims().to_vec())
        }
        Value::RawTensor(r) => (r.dtype.clone(), r.size.clone()),
        other => panic!("not a tensor: {}", other.type_name()),
    }
}

/// float8_e4m3fn values decoded one by one (candle's own conversion of this dtype crawls).
fn f8_values(t: &candle_core::Tensor) -> Vec<f64> {
    let (s, layout) = t.storage_and_layout();
    let candle_core::Storage::Cpu(candle_core::CpuStorage::F8E4M3(v)) = &*s else {
        panic!("not a CPU float8 tensor");
    };
    let start = layout.start_offset();
    v[start..start + t.elem_count()]
        .iter()
        .map(|x| x.to_f64())
        .collect()
}

#[test]
fn every_dtype_and_layout_torch_save_writes_reads_with_its_real_dtype() {
    let json = every_dtype_json();
    let v = open("every_dtype.pth");
    let d = v.as_dict().unwrap();
    for (k, want) in json.as_object().unwrap() {
        let got = d.get(k).unwrap_or_else(|| panic!("{k} missing"));
        let (dtype, shape) = dtype_and_shape(got);
        assert_eq!(dtype, want["dtype"].as_str().unwrap(), "{k}: dtype");
        let want_shape: Vec<usize> = want["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(shape, want_shape, "{k}: shape");
        let layout = want["layout"].as_str().unwrap();
        if let Value::RawTensor(r) = got {
            if layout != "torch.strided" {
                assert_eq!(format!("torch.{}", r.layout()), layout, "{k}: layout");
            }
        }
        // Real numbers compare exactly (uint64 and complex are checked by the round trip).
        if let Some(values) = want.get("values").and_then(|x| x.as_array()) {
            let got = match got {
                Value::Tensor(t) if t.dtype() == candle_core::DType::F8E4M3 => Some(f8_values(t)),
                Value::Tensor(t) => Some(to_f64_vec(t)),
                Value::RawTensor(r) => r.to_f64_vec().map(Result::unwrap),
                _ => None,
            };
            if let (Some(got), Some(_)) = (got, values.first().and_then(|x| x.as_f64())) {
                let want: Vec<f64> = values.iter().map(|x| x.as_f64().unwrap()).collect();
                assert_eq!(got, want, "{k}: values");
            }
        }
        if let Some(deq) = want.get("dequantized").and_then(|x| x.as_array()) {
            let r = got.as_raw_tensor().unwrap();
            if let Some(got) = r.to_f64_vec() {
                let got = got.unwrap();
                for (g, w) in got.iter().zip(deq) {
                    assert!(
                        (g - w.as_f64().unwrap()).abs() < 1e-6,
                        "{k}: {got:?} vs {deq:?}"
                    );
                }
            }
        }
    }
    // The legacy format has the dense ones.
    let legacy = open("every_dtype_legacy.pth");
    let r = legacy.get("c128").and_then(Value::as_raw_tensor).unwrap();
    assert_eq!(
        (r.dtype.as_str(), r.size.as_slice()),
        ("complex128", &[2, 2][..])
    );
    let i8_view = legacy
        .get("i8_view")
        .and_then(Value::as_raw_tensor)
        .unwrap();
    assert_eq!(
        i8_view.to_f64_vec().unwrap().unwrap(),
        vec![0., 4., 8., 1., 5., 9., 2., 6., 10., 3., 7., 11.]
    );
}

#[test]
fn every_dtype_writes_back_byte_identical_and_pytorch_agrees() {
    let v = open("every_dtype.pth");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("back.pth");
    flambeau_serialize::save(&v, &out).unwrap();
    // flambeau reads its own output with the same dtypes and bytes.
    let back = load(&out, &LoadConfig::default()).unwrap();
    for (k, x) in &v.as_dict().unwrap().entries {
        let k = k.as_str().unwrap();
        let y = back.get(k).unwrap();
        assert_eq!(dtype_and_shape(x), dtype_and_shape(y), "{k}");
        if let (Value::RawTensor(a), Value::RawTensor(b)) = (x, y) {
            match (a.contiguous_bytes(), b.contiguous_bytes()) {
                (Some(a), Some(b)) => assert_eq!(a.unwrap(), b.unwrap(), "{k}: bytes"),
                (None, None) => assert_eq!(a.layout(), b.layout(), "{k}"),
                _ => panic!("{k}: kind changed"),
            }
        }
    }
    let Some(python) = flambeau_testkit::torch_python("every_dtype_round_trip") else {
        return;
    };
    let script = r#"
import sys, torch
a = torch.load(sys.argv[1]); b = torch.load(sys.argv[2])  # weights_only=True, the default
assert list(a) == list(b), (list(a), list(b))
def raw(t):
    return t.reshape(-1).contiguous().view(torch.uint8)
for k in a:
    x, y = a[k], b[k]
    assert x.dtype == y.dtype and x.layout == y.layout and x.shape == y.shape, k
    if x.is_quantized:
        assert x.qscheme() == y.qscheme(), k
        assert torch.equal(x.int_repr(), y.int_repr()), k
        assert torch.equal(x.dequantize(), y.dequantize()), k
    elif x.layout != torch.strided:
        assert torch.equal(x.to_dense(), y.to_dense()), k
    else:
        assert x.stride() == y.stride(), (k, x.stride(), y.stride())
        assert torch.equal(raw(x), raw(y)), k
print("same", len(a))
"#;
    let orig = file("every_dtype.pth");
    let said = flambeau_testkit::run_python(
        &python,
        script,
        &[orig.to_str().unwrap(), out.to_str().unwrap()],
    );
    assert!(said.contains("same 17"), "{said}");
}

#[test]
fn int8_bool_uint16_uint64_safetensors_read_and_write_back_with_their_dtypes() {
    let sd =
        flambeau_serialize::open_state_dict(file("small_ints.safetensors"), &LoadConfig::default())
            .unwrap();
    let dtype = |k: &str| sd.get_raw(k).map(|r| r.dtype.clone());
    assert_eq!(dtype("i8").as_deref(), Some("int8"));
    assert_eq!(dtype("bool").as_deref(), Some("bool"));
    assert_eq!(dtype("u16").as_deref(), Some("uint16"));
    assert_eq!(dtype("u64").as_deref(), Some("uint64"));
    assert_eq!(
        sd.get_raw("i8").unwrap().to_f64_vec().unwrap().unwrap(),
        vec![1., -2., -128., 127.]
    );
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("back.safetensors");
    flambeau_serialize::safetensors::save(&sd, &st).unwrap();
    let pth = dir.path().join("back.pth");
    flambeau_serialize::save_state_dict(&sd, &pth).unwrap();
    let again = flambeau_serialize::safetensors::load(&st, &candle_core::Device::Cpu).unwrap();
    assert_eq!(again.get_raw("u64").unwrap().dtype, "uint64");
    let Some(python) = flambeau_testkit::torch_python("small_ints_round_trip") else {
        return;
    };
    let script = r#"
import sys, torch
from safetensors.torch import load_file
a = load_file(sys.argv[1]); b = load_file(sys.argv[2]); c = torch.load(sys.argv[3])
for k in a:
    for other in (b, c):
        assert a[k].dtype == other[k].dtype, (k, a[k].dtype, other[k].dtype)
        assert torch.equal(a[k].view(torch.uint8), other[k].view(torch.uint8)), k
print("same dtypes", sorted(str(a[k].dtype) for k in a))
"#;
    let said = flambeau_testkit::run_python(
        &python,
        script,
        &[
            file("small_ints.safetensors").to_str().unwrap(),
            st.to_str().unwrap(),
            pth.to_str().unwrap(),
        ],
    );
    assert!(said.contains("same dtypes"), "{said}");
}

#[test]
fn a_model_refuses_a_raw_tensor_naming_the_key_and_dtype_but_takes_int8_widened() {
    use flambeau_core::{Init, LoadOptions, StateDict, VarStore};
    let v = open("every_dtype.pth");
    let c64 = v.get("c64").and_then(Value::as_raw_tensor).unwrap().clone();
    let i8 = v.get("i8").and_then(Value::as_raw_tensor).unwrap().clone();
    let store = VarStore::new(&candle_core::Device::Cpu, candle_core::DType::F32);
    let root = store.root();
    root.param("w", 2, Init::Const(0.0)).unwrap();
    root.param("q", 4, Init::Const(0.0)).unwrap();
    let mut sd = StateDict::new();
    sd.insert_raw("w", c64);
    sd.insert_raw("q", i8.clone());
    let err = store
        .load_state_dict(&sd, &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"w\"") && err.contains("complex64"), "{err}");
    // int8 widens exactly; the float model takes it with a cast, as copy_ does.
    let mut sd = StateDict::new();
    sd.insert(
        "w",
        candle_core::Tensor::new(&[1f32, 2.], &candle_core::Device::Cpu).unwrap(),
    );
    sd.insert_raw("q", i8);
    let opts = LoadOptions {
        cast_dtype: true,
        ..LoadOptions::default()
    };
    store.load_state_dict(&sd, &opts).unwrap();
    let q = store.get("q").unwrap();
    assert_eq!(to_f64_vec(q.as_tensor()), vec![1., -2., -128., 127.]);
}

fn expected_sharded() -> flambeau_serialize::StateDict {
    find_state_dict(&open("sharded_expected.pth"))
        .unwrap()
        .state_dict
}

/// Same keys and values; same order too, except within a `.safetensors` shard, whose tensors
/// the format itself stores sorted by dtype and name.
fn assert_same_state_dict(what: &str, got: &flambeau_serialize::StateDict) {
    let want = expected_sharded();
    let mut got_keys: Vec<&str> = got.keys().collect();
    let mut want_keys: Vec<&str> = want.keys().collect();
    if what.contains("safetensors") {
        got_keys.sort();
        want_keys.sort();
    }
    assert_eq!(got_keys, want_keys, "{what}: keys");
    for (k, t) in want.iter() {
        assert_eq!(
            to_f64_vec(got.get(k).unwrap()),
            to_f64_vec(t),
            "{what}: {k}"
        );
    }
}

#[test]
fn sharded_checkpoints_open_as_one_state_dict_from_the_index_a_shard_or_the_directory() {
    for (dir, index, shard) in [
        (
            "sharded_bin",
            "pytorch_model.bin.index.json",
            "pytorch_model-00002-of-00003.bin",
        ),
        (
            "sharded_safetensors",
            "model.safetensors.index.json",
            "model-00002-of-00003.safetensors",
        ),
    ] {
        for path in [
            file(&format!("{dir}/{index}")),
            file(&format!("{dir}/{shard}")),
            file(dir),
        ] {
            let opened = flambeau_serialize::open_file(&path, &LoadConfig::default())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(
                matches!(
                    opened.format,
                    flambeau_serialize::Format::Sharded { shards: 3, .. }
                ),
                "{:?}",
                opened.format
            );
            let sd = find_state_dict(&opened.value).unwrap().state_dict;
            assert_same_state_dict(&path.display().to_string(), &sd);
        }
    }
}

#[test]
fn a_sharded_checkpoint_with_a_missing_shard_or_a_hostile_index_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let src = file("sharded_safetensors");
    for name in [
        "model.safetensors.index.json",
        "model-00001-of-00003.safetensors",
    ] {
        std::fs::copy(src.join(name), dir.path().join(name)).unwrap();
    }
    let err = flambeau_serialize::open(dir.path(), &LoadConfig::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("model-00002-of-00003.safetensors is missing"),
        "{err}"
    );
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        r#"{"weight_map": {"a": "../../etc/passwd"}}"#,
    )
    .unwrap();
    let err = flambeau_serialize::open(dir.path(), &LoadConfig::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a file name beside the index"), "{err}");
}

#[test]
fn sharded_writing_splits_by_size_and_writes_the_index_as_hugging_face_does() {
    let sd = expected_sharded();
    for name in ["model.safetensors", "pytorch_model.bin"] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join(name);
        // Each 8×8 f32 weight is 256 bytes: two fit in 600.
        let files = flambeau_serialize::sharded::save(&sd, &out, 600).unwrap();
        assert_eq!(files.len(), 4, "{files:?}");
        let index = files.last().unwrap();
        assert_eq!(
            index.file_name().unwrap().to_str().unwrap(),
            format!("{name}.index.json")
        );
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(index).unwrap()).unwrap();
        assert_eq!(json["metadata"]["total_size"], 5 * 256 + 12);
        let stem = name.split('.').next().unwrap();
        let ext = name.rsplit('.').next().unwrap();
        assert_eq!(
            json["weight_map"]["layers.2.weight"],
            format!("{stem}-00002-of-00003.{ext}")
        );
        let back = flambeau_serialize::open_state_dict(index, &LoadConfig::default()).unwrap();
        assert_same_state_dict(name, &back);
    }
    assert!(flambeau_serialize::sharded::parse_size("500MB").unwrap() == 500_000_000);
    assert!(flambeau_serialize::sharded::parse_size("2GiB").unwrap() == 2 << 30);
    assert!(flambeau_serialize::sharded::parse_size("lots").is_err());
    assert!(flambeau_serialize::sharded::parse_size("0MB").is_err());
}

#[test]
fn a_torchscript_archive_reads_as_the_state_dict_torch_jit_load_returns() {
    let opened =
        flambeau_serialize::open_file(file("scripted.pt"), &LoadConfig::default()).unwrap();
    assert_eq!(opened.format, flambeau_serialize::Format::TorchScript);
    let got = find_state_dict(&opened.value).unwrap().state_dict;
    let want = find_state_dict(&open("scripted_state_dict.pth"))
        .unwrap()
        .state_dict;
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (k, t) in want.iter() {
        assert_eq!(to_f64_vec(got.get(k).unwrap()), to_f64_vec(t), "{k}");
        assert_eq!(got.get(k).unwrap().dtype(), t.dtype(), "{k}");
    }
}

#[test]
fn a_torchscript_resnet18_reads_as_its_state_dict() {
    let Some(python) = flambeau_testkit::torch_python("torchscript_resnet18") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let script = r#"
import sys, os, collections, warnings, torch, torchvision
warnings.simplefilter("ignore")
torch.manual_seed(0)
m = torch.jit.script(torchvision.models.resnet18(num_classes=10).eval())
torch.jit.save(m, os.path.join(sys.argv[1], "resnet18_scripted.pt"))
sd = torch.jit.load(os.path.join(sys.argv[1], "resnet18_scripted.pt")).state_dict()
torch.save(collections.OrderedDict(sd), os.path.join(sys.argv[1], "expected.pth"))
print(len(sd))
"#;
    let n = flambeau_testkit::run_python(&python, script, &[dir.path().to_str().unwrap()]);
    let got = flambeau_serialize::open_state_dict(
        dir.path().join("resnet18_scripted.pt"),
        &LoadConfig::default(),
    )
    .unwrap();
    let want = flambeau_serialize::load_state_dict_file(
        dir.path().join("expected.pth"),
        &LoadConfig::default(),
    )
    .unwrap();
    assert_eq!(got.len().to_string(), n.trim());
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (k, t) in want.iter() {
        assert_eq!(to_f64_vec(got.get(k).unwrap()), to_f64_vec(t), "{k}");
    }
}
