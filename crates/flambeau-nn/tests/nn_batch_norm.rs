//! BatchNorm2d in training over three batches and then in eval, against PyTorch.

mod common;

use candle_core::{ModuleT, Var};
use common::{load_params, nn_fixture, store};
use flambeau_nn::{BatchNorm2d, BatchNormConfig};
use flambeau_testkit::{assert_close, fixture, load_json};

#[test]
fn batch_norm2d_train_then_eval_matches_pytorch() {
    let cases = load_json(&fixture("flambeau-nn", "nn/bn_cases.json"));
    for (name, c) in cases.as_object().unwrap() {
        let config = BatchNormConfig {
            eps: 1e-5,
            momentum: c["momentum"].as_f64(),
            affine: c["affine"].as_bool().unwrap(),
            track_running_stats: c["track"].as_bool().unwrap(),
        };
        let vs = store();
        let bn = BatchNorm2d::new(vs.root(), 3, config).unwrap();
        let t = nn_fixture(name);
        // Initial parameters are PyTorch's ones/zeros: nothing to load.
        let _ = load_params;
        for step in 0..3 {
            let x = Var::from_tensor(&t[&format!("x{step}")]).unwrap();
            let out = bn.forward_t(x.as_tensor(), true).unwrap();
            let what = |s: &str| format!("{name} step {step}: {s}");
            assert_close(&what("output"), &out, &t[&format!("out{step}")], 1e-5, 1e-5);
            let loss = (&out * &t[&format!("g{step}")]).unwrap().sum_all().unwrap();
            let grads = loss.backward().unwrap();
            assert_close(
                &what("grad x"),
                grads.get(x.as_tensor()).unwrap(),
                &t[&format!("grad_x{step}")],
                1e-5,
                1e-5,
            );
            for (pname, var) in vs.named_parameters() {
                assert_close(
                    &what(&format!("grad {pname}")),
                    grads.get(var.as_tensor()).unwrap(),
                    &t[&format!("grad{step}.{pname}")],
                    1e-5,
                    1e-5,
                );
            }
            let state = vs.state_dict();
            let keys: Vec<&str> = state.keys().collect();
            let expected_keys: Vec<String> = t
                .keys()
                .filter_map(|k| k.strip_prefix(&format!("state{step}.")).map(String::from))
                .collect();
            assert_eq!(
                keys.len(),
                expected_keys.len(),
                "{name}: state keys {keys:?}"
            );
            for (k, v) in state.iter() {
                let expected = &t[&format!("state{step}.{k}")];
                if k.ends_with("num_batches_tracked") {
                    assert_eq!(
                        v.to_scalar::<i64>().unwrap(),
                        step as i64 + 1,
                        "{}",
                        what(k)
                    );
                    assert_eq!(v.dtype(), candle_core::DType::I64);
                } else {
                    assert_close(&what(k), v, expected, 1e-6, 1e-6);
                }
            }
        }
        let out = bn.forward_t(&t["x_eval"], false).unwrap();
        assert_close(
            &format!("{name}: eval output"),
            &out,
            &t["out_eval"],
            1e-5,
            1e-5,
        );
    }
}

#[test]
fn batch_norm2d_registers_pytorch_names_and_version() {
    let vs = store();
    BatchNorm2d::new(vs.root().pp("bn"), 4, BatchNormConfig::default()).unwrap();
    let keys: Vec<String> = vs.state_dict().keys().map(String::from).collect();
    assert_eq!(
        keys,
        [
            "bn.weight",
            "bn.bias",
            "bn.running_mean",
            "bn.running_var",
            "bn.num_batches_tracked"
        ]
    );
    assert_eq!(vs.named_parameters().len(), 2);
    assert!(vs.module_versions().contains(&("bn".to_string(), 2)));
}

#[test]
fn batch_norm2d_rejects_wrong_channel_count() {
    let vs = store();
    let bn = BatchNorm2d::new(vs.root(), 4, BatchNormConfig::default()).unwrap();
    let x = candle_core::Tensor::zeros(
        (2, 3, 2, 2),
        candle_core::DType::F64,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let err = bn.forward_t(&x, true).unwrap_err().to_string();
    assert!(err.contains("expects [N, 4, H, W]"), "{err}");
}

#[test]
fn fused_batch_norm_relu_and_add_relu_equal_the_separate_ops_in_f32() {
    use candle_core::{DType, Device, Tensor};
    use flambeau_core::VarStore;
    use flambeau_kernels::relu::{add_relu, relu};

    let dev = Device::Cpu;
    let vs = VarStore::new(&dev, DType::F32);
    let bn = BatchNorm2d::new(vs.root(), 3, BatchNormConfig::default()).unwrap();
    let weight = Tensor::new(&[0.5f32, -1.5, 2.0], &dev).unwrap();
    let bias = Tensor::new(&[0.1f32, 0.2, -0.3], &dev).unwrap();
    for (name, var) in vs.named_parameters() {
        var.set(if name == "weight" { &weight } else { &bias })
            .unwrap();
    }
    let values: Vec<f32> = (0..2 * 3 * 4 * 5)
        .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
        .collect();
    let g = Tensor::from_vec(
        (0..values.len())
            .map(|i| (i % 5) as f32 - 2.0)
            .collect::<Vec<_>>(),
        (2, 3, 4, 5),
        &dev,
    )
    .unwrap();
    let residual: Vec<f32> = (0..values.len()).map(|i| (i % 7) as f32 - 3.0).collect();
    for (train, with_residual) in [(true, false), (false, false), (true, true), (false, true)] {
        let run = |fused: bool| {
            let x = Var::from_vec(values.clone(), (2, 3, 4, 5), &dev).unwrap();
            let r = Var::from_vec(residual.clone(), (2, 3, 4, 5), &dev).unwrap();
            let x_ = x.as_tensor();
            let y = match (fused, with_residual) {
                (true, false) => bn.forward_relu_t(x_, train),
                (false, false) => relu(&bn.forward_t(x_, train).unwrap()),
                (true, true) => bn.forward_add_relu_t(x_, r.as_tensor(), train),
                (false, true) => add_relu(&bn.forward_t(x_, train).unwrap(), r.as_tensor()),
            }
            .unwrap();
            let grads = (&y * &g).unwrap().sum_all().unwrap().backward().unwrap();
            let mut out = vec![y, grads.get(x_).unwrap().clone()];
            if with_residual {
                out.push(grads.get(r.as_tensor()).unwrap().clone());
            }
            for (_, var) in vs.named_parameters() {
                out.push(grads.get(var.as_tensor()).unwrap().clone());
            }
            out
        };
        let (fused, composed) = (run(true), run(false));
        assert!(fused[0].min_all().unwrap().to_scalar::<f32>().unwrap() == 0.0);
        for (i, (a, b)) in fused.iter().zip(&composed).enumerate() {
            let what = format!("train {train}, residual {with_residual}, output {i}");
            assert_close(&what, a, b, 1e-6, 1e-6);
        }
    }
}

/// PyTorch's `_verify_batch_size`: one value per channel in training is an error on every path
/// (fused f32 with and without the ReLU / residual add, generic f64), the running statistics stay
/// as they were (finite), and eval mode still accepts the single sample.
#[test]
fn one_value_per_channel_in_training_is_pytorchs_error_on_every_path() {
    use candle_core::{DType, Device, Tensor};
    use flambeau_core::VarStore;

    let dev = Device::Cpu;
    for dtype in [DType::F32, DType::F64] {
        let vs = VarStore::new(&dev, dtype);
        let bn = BatchNorm2d::new(vs.root(), 64, BatchNormConfig::default()).unwrap();
        let x = Tensor::ones((1, 64, 1, 1), dtype, &dev).unwrap();
        let residual = x.zeros_like().unwrap();
        let results = [
            ("forward_t", bn.forward_t(&x, true)),
            ("forward_relu_t", bn.forward_relu_t(&x, true)),
            (
                "forward_add_relu_t",
                bn.forward_add_relu_t(&x, &residual, true),
            ),
        ];
        for (path, r) in results {
            let err = r.expect_err(path).to_string();
            assert!(
                err.starts_with(
                    "Expected more than 1 value per channel when training, got input size [1, 64, 1, 1]"
                ),
                "{dtype:?} {path}: {err}"
            );
        }
        let var: Vec<f64> = bn
            .running_var()
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(var.iter().all(|v| *v == 1.0), "{dtype:?}: {var:?}");
        let count = bn
            .num_batches_tracked()
            .unwrap()
            .to_scalar::<i64>()
            .unwrap();
        assert_eq!(count, 0, "{dtype:?}: a refused batch is not counted");
        // Eval uses the running statistics: one sample is fine there.
        let y = bn.forward_t(&x, false).unwrap();
        assert_eq!(y.dims(), &[1, 64, 1, 1]);
        // Two samples, or one sample with two pixels, train normally.
        for shape in [(2, 64, 1, 1), (1, 64, 1, 2)] {
            let x = Tensor::ones(shape, dtype, &dev).unwrap();
            bn.forward_relu_t(&x, true).unwrap();
        }
        let var: Vec<f64> = bn
            .running_var()
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(var.iter().all(|v| v.is_finite()), "{dtype:?}: {var:?}");
    }
}
