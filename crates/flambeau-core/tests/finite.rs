//! `check_finite` names the first weight or buffer holding NaN or infinity.

use candle_core::{DType, Device, Tensor};
use flambeau_core::{Error, Init, NonFinite, StateDict, VarStore};

fn t(values: &[f32]) -> Tensor {
    Tensor::new(values, &Device::Cpu).unwrap()
}

#[test]
fn the_first_non_finite_tensor_is_named_with_its_counts() {
    let mut sd = StateDict::new();
    sd.insert("conv.weight", t(&[1.0, -2.0]));
    sd.insert("bn.running_var", t(&[f32::NAN, 1.0, f32::NAN]));
    sd.insert("fc.bias", t(&[f32::INFINITY]));
    sd.insert(
        "bn.num_batches_tracked",
        Tensor::new(3i64, &Device::Cpu).unwrap(),
    );
    let found = sd.first_non_finite().unwrap().unwrap();
    assert_eq!(
        found,
        NonFinite {
            key: "bn.running_var".into(),
            nan: 2,
            inf: 0,
            numel: 3
        }
    );
    let err = sd.check_finite().unwrap_err();
    assert!(matches!(&err, Error::NonFinite(f) if f.key == "bn.running_var"));
    let msg = err.to_string();
    assert!(
        msg.starts_with("`bn.running_var` is not finite (2 NaN and 0 infinite of 3 values)"),
        "{msg}"
    );

    sd.remove("bn.running_var");
    let found = sd.first_non_finite().unwrap().unwrap();
    assert_eq!(
        (found.key.as_str(), found.nan, found.inf),
        ("fc.bias", 0, 1)
    );

    sd.remove("fc.bias");
    assert_eq!(sd.first_non_finite().unwrap(), None);
    sd.check_finite().unwrap();
}

#[test]
fn var_store_checks_parameters_and_buffers_in_every_float_dtype() {
    for dtype in [DType::F32, DType::F64, DType::BF16, DType::F16] {
        let vs = VarStore::new(&Device::Cpu, dtype);
        let root = vs.root();
        root.param("weight", 4, Init::Const(0.5)).unwrap();
        let var = root
            .buffer(
                "running_var",
                Tensor::ones(4, dtype, &Device::Cpu).unwrap(),
                true,
            )
            .unwrap();
        vs.check_finite().unwrap();
        let bad = Tensor::new(&[1.0f32, f32::NEG_INFINITY, f32::NAN, 1.0], &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        var.set(&bad).unwrap();
        let found = vs.first_non_finite().unwrap().unwrap();
        assert_eq!(
            (found.key.as_str(), found.nan, found.inf),
            ("running_var", 1, 1),
            "{dtype:?}"
        );
        assert!(vs.check_finite().is_err());
    }
}
