//! safetensors round trip, order kept.

use candle_core::{DType, Device, Tensor};
use flambeau_serialize::{safetensors, StateDict};
use flambeau_testkit::to_f64_vec;

#[test]
fn safetensors_round_trip_keeps_values_dtypes_and_order() {
    let mut sd = StateDict::new();
    sd.insert(
        "z.weight",
        Tensor::arange(0f32, 6.0, &Device::Cpu)
            .unwrap()
            .reshape((2, 3))
            .unwrap(),
    );
    sd.insert("a.bias", Tensor::new(&[1.5f64, 2.5], &Device::Cpu).unwrap());
    sd.insert("m.count", Tensor::new(9i64, &Device::Cpu).unwrap());
    sd.insert(
        "t",
        Tensor::arange(0f32, 6.0, &Device::Cpu)
            .unwrap()
            .reshape((2, 3))
            .unwrap()
            .t()
            .unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    safetensors::save(&sd, &path).unwrap();
    let back = safetensors::load(&path, &Device::Cpu).unwrap();
    for ((k, a), (k2, b)) in back.iter().zip(sd.iter()) {
        let _ = k2;
        let b = sd.get(k).unwrap_or(b);
        assert_eq!(a.dims(), b.dims(), "{k}");
        assert_eq!(to_f64_vec(a), to_f64_vec(b), "{k}");
    }
    assert_eq!(back.get("m.count").unwrap().dtype(), DType::I64);
    assert!(safetensors::load(dir.path().join("missing.safetensors"), &Device::Cpu).is_err());
    std::fs::write(
        dir.path().join("bad.safetensors"),
        b"\x10\x00\x00\x00\x00\x00\x00\x00{not json",
    )
    .unwrap();
    assert!(safetensors::load(dir.path().join("bad.safetensors"), &Device::Cpu).is_err());
}
