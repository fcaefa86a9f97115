//! Key rules, casts and moves keep the tensors candle cannot hold (int8, complex, …): they are
//! renamed with their keys, never silently dropped.

use candle_core::{DType, Device, Tensor};
use flambeau_core::{KeyRule, RawData, RawStorage, RawStrided, RawTensor, StateDict};

fn int8(values: &[i8]) -> RawTensor {
    RawTensor {
        dtype: "int8".into(),
        size: vec![values.len()],
        data: RawData::Strided(RawStrided {
            storage: RawStorage::new(values.iter().map(|v| *v as u8).collect()),
            offset: 0,
            stride: vec![1],
        }),
    }
}

fn wrapped() -> StateDict {
    let mut sd = StateDict::new();
    sd.insert(
        "module.fc.weight",
        Tensor::new(&[1f32, 2.0], &Device::Cpu).unwrap(),
    );
    sd.insert_raw("module.fc.scale_q", int8(&[-3, 4]));
    sd
}

#[test]
fn raw_entries_survive_every_key_rule_cast_and_move() {
    let sd = wrapped();
    let stripped = sd.strip_wrappers();
    assert_eq!(
        stripped.keys().collect::<Vec<_>>(),
        ["fc.weight", "fc.scale_q"]
    );
    assert_eq!(stripped.get_raw("fc.scale_q").unwrap().dtype, "int8");
    let renamed = KeyRule::rename(r"^module\.fc\.", "head.")
        .apply(&sd, &[])
        .unwrap();
    assert!(renamed.get_raw("head.scale_q").is_some());
    let kept = stripped.keep_only(["fc.scale_q"]);
    assert_eq!(kept.len(), 1);
    let cast = stripped.to_dtype(DType::F16).unwrap();
    assert_eq!(cast.get("fc.weight").unwrap().dtype(), DType::F16);
    assert!(cast.get_raw("fc.scale_q").is_some());
    assert!(stripped
        .to_device(&Device::Cpu)
        .unwrap()
        .get_raw("fc.scale_q")
        .is_some());
    assert_eq!(sd.add_prefix("x.").len(), 2);
}
