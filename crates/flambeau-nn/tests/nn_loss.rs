//! Cross-entropy (label smoothing, ignore_index, reductions) against PyTorch.

mod common;

use candle_core::{DType, Var};
use common::nn_fixture;
use flambeau_nn::loss::{
    accuracy, correct_predictions, cross_entropy, CrossEntropyOptions, Reduction,
};
use flambeau_testkit::assert_close;

#[test]
fn cross_entropy_matches_pytorch() {
    let t = nn_fixture("cross_entropy");
    let cases = [
        ("plain", 0.0, Reduction::Mean),
        ("smooth", 0.1, Reduction::Mean),
        ("sum", 0.0, Reduction::Sum),
        ("none", 0.0, Reduction::None),
        ("smooth_sum", 0.2, Reduction::Sum),
    ];
    for (name, eps, reduction) in cases {
        let logits = Var::from_tensor(&t["logits"]).unwrap();
        let opts = CrossEntropyOptions {
            label_smoothing: eps,
            reduction,
            ..Default::default()
        };
        let loss = cross_entropy(logits.as_tensor(), &t["targets"], &opts).unwrap();
        assert_close(
            &format!("{name}: loss"),
            &loss,
            &t[&format!("{name}.loss")],
            1e-6,
            1e-6,
        );
        let total = (&loss * &t[&format!("{name}.g")])
            .unwrap()
            .sum_all()
            .unwrap();
        let grads = total.backward().unwrap();
        assert_close(
            &format!("{name}: grad"),
            grads.get(logits.as_tensor()).unwrap(),
            &t[&format!("{name}.grad")],
            1e-6,
            1e-6,
        );
    }
}

#[test]
fn cross_entropy_rejects_out_of_range_targets() {
    let t = nn_fixture("cross_entropy");
    let bad = candle_core::Tensor::new(&[0i64, 9, 0, 0, 0, 0], &candle_core::Device::Cpu).unwrap();
    let err = cross_entropy(&t["logits"], &bad, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("out of bounds"), "{err}");
}

#[test]
fn accuracy_counts_argmax_hits() {
    let logits = candle_core::Tensor::new(
        &[[0.1f32, 0.9], [0.8, 0.2], [0.3, 0.7]],
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let targets = candle_core::Tensor::new(&[1u32, 1, 1], &candle_core::Device::Cpu).unwrap();
    let acc = accuracy(&logits, &targets.to_dtype(DType::U32).unwrap()).unwrap();
    assert!((acc - 2.0 / 3.0).abs() < 1e-12);
}

#[test]
fn correct_predictions_is_an_f64_count_on_the_device() {
    let dev = candle_core::Device::Cpu;
    let logits = candle_core::Tensor::new(&[[0.1f32, 0.9], [0.8, 0.2], [0.3, 0.7]], &dev).unwrap();
    let targets = candle_core::Tensor::new(&[1i64, 1, 1], &dev).unwrap();
    let count = correct_predictions(&logits, &targets).unwrap();
    assert_eq!((count.dtype(), count.dims()), (DType::F64, &[][..]));
    assert_eq!(count.to_scalar::<f64>().unwrap(), 2.0);
    let none = logits.narrow(0, 0, 0).unwrap();
    let count = correct_predictions(&none, &targets.narrow(0, 0, 0).unwrap()).unwrap();
    assert_eq!(count.to_scalar::<f64>().unwrap(), 0.0);
}
