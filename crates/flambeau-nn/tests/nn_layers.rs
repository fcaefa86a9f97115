//! Conv2d, Linear, MaxPool2d and AdaptiveAvgPool2d against PyTorch: outputs and gradients.

mod common;

use candle_core::{Device, Module, Tensor, Var};
use common::{forward_backward, load_params, nn_fixture, store};
use flambeau_nn::{
    AdaptiveAvgPool2d, Conv2d, Conv2dConfig, Flatten, Linear, MaxPool2d, MaxPool2dConfig,
};
use flambeau_testkit::{assert_close, fixture, load_json};

const TOL: f64 = 1e-5;

fn check_param_grads(
    vs: &flambeau_core::VarStore,
    t: &std::collections::HashMap<String, candle_core::Tensor>,
    grads: &candle_core::backprop::GradStore,
    case: &str,
) {
    for (name, var) in vs.named_parameters() {
        let got = grads.get(var.as_tensor()).expect("parameter gradient");
        assert_close(
            &format!("{case}: grad of {name}"),
            got,
            &t[&format!("grad.{name}")],
            TOL,
            TOL,
        );
    }
}

#[test]
fn conv2d_matches_pytorch_forward_and_gradients() {
    let cases = load_json(&fixture("flambeau-nn", "nn/conv_cases.json"));
    for (name, c) in cases.as_object().unwrap() {
        let u = |k: &str| c[k].as_u64().unwrap() as usize;
        let vs = store();
        let conv = Conv2d::new(
            vs.root(),
            u("cin"),
            u("cout"),
            u("k"),
            Conv2dConfig {
                stride: u("stride"),
                padding: u("padding"),
                dilation: u("dilation"),
                groups: u("groups"),
                bias: c["bias"].as_bool().unwrap(),
            },
        )
        .unwrap();
        let t = nn_fixture(name);
        load_params(&vs, &t);
        let (out, gx, grads) = forward_backward(&t, |x| conv.forward(x));
        assert_close(&format!("{name}: output"), &out, &t["out"], TOL, TOL);
        assert_close(&format!("{name}: grad x"), &gx, &t["grad_x"], TOL, TOL);
        check_param_grads(&vs, &t, &grads, name);
    }
}

#[test]
fn linear_matches_pytorch() {
    let vs = store();
    let fc = Linear::new(vs.root(), 5, 3, true).unwrap();
    let t = nn_fixture("linear");
    load_params(&vs, &t);
    let (out, gx, grads) = forward_backward(&t, |x| fc.forward(x));
    assert_close("linear output", &out, &t["out"], TOL, TOL);
    assert_close("linear grad x", &gx, &t["grad_x"], TOL, TOL);
    check_param_grads(&vs, &t, &grads, "linear");
}

#[test]
fn max_pool2d_matches_pytorch_including_backward() {
    let cases = load_json(&fixture("flambeau-nn", "nn/pool_cases.json"));
    for (name, c) in cases.as_object().unwrap() {
        let u = |k: &str| c[k].as_u64().unwrap() as usize;
        let pool = MaxPool2d::new(MaxPool2dConfig {
            kernel_size: u("k"),
            stride: Some(u("stride")),
            padding: u("padding"),
            dilation: u("dilation"),
            ceil_mode: c["ceil"].as_bool().unwrap(),
        });
        let t = nn_fixture(name);
        let (out, gx, _) = forward_backward(&t, |x| pool.forward(x));
        assert_close(&format!("{name}: output"), &out, &t["out"], TOL, TOL);
        assert_close(&format!("{name}: grad x"), &gx, &t["grad_x"], TOL, TOL);
    }
}

/// ResNet's stem max-pool: 3×3, stride 2, padding 1.
fn resnet_stem_pool() -> MaxPool2d {
    MaxPool2d::new(MaxPool2dConfig {
        kernel_size: 3,
        stride: Some(2),
        padding: 1,
        dilation: 1,
        ceil_mode: false,
    })
}

#[test]
fn max_pool2d_works_in_f32_and_rejects_oversized_padding() {
    let t = nn_fixture("pool_resnet_stem");
    let x = t["x"].to_dtype(candle_core::DType::F32).unwrap();
    let pool = resnet_stem_pool();
    assert_close(
        "f32 pool",
        &pool.forward(&x).unwrap(),
        &t["out"],
        1e-6,
        1e-6,
    );
    let bad = MaxPool2d::new(MaxPool2dConfig {
        kernel_size: 2,
        stride: None,
        padding: 2,
        dilation: 1,
        ceil_mode: false,
    });
    let err = bad.forward(&x).unwrap_err().to_string();
    assert!(err.contains("pad should be at most half"), "{err}");
}

#[test]
fn conv2d_computes_only_the_gradients_autograd_needs() {
    use flambeau_kernels::{conv2d, kernel_mode, KernelMode};
    if kernel_mode() == KernelMode::Generic {
        // candle's own conv2d backward (the generic path) fills in every input's gradient.
        eprintln!("skipped: skipping unused gradients is a property of the fast CPU kernel");
        return;
    }
    let dev = Device::Cpu;
    let x = Tensor::from_vec(
        (0..2 * 3 * 5 * 5).map(|i| i as f32 / 10.0).collect(),
        (2, 3, 5, 5),
        &dev,
    )
    .unwrap();
    let w = Tensor::from_vec(
        (0..4 * 3 * 3 * 3).map(|i| (i % 7) as f32 - 3.0).collect(),
        (4, 3, 3, 3),
        &dev,
    )
    .unwrap();
    let grads_of = |x: &Tensor, w: &Tensor| {
        let y = conv2d(x, w, 1, 1, 1, 1).unwrap();
        y.sum_all().unwrap().backward().unwrap()
    };
    // A frozen input (an image): only the weight gets a gradient.
    let wv = Var::from_tensor(&w).unwrap();
    let grads = grads_of(&x, wv.as_tensor());
    assert!(grads.get(&x).is_none());
    let dw = grads.get(wv.as_tensor()).unwrap().clone();
    // A frozen weight: only the input does; the same values as when both are variables.
    let xv = Var::from_tensor(&x).unwrap();
    let grads = grads_of(xv.as_tensor(), &w);
    assert!(grads.get(&w).is_none());
    let dx = grads.get(xv.as_tensor()).unwrap().clone();
    let grads = grads_of(xv.as_tensor(), wv.as_tensor());
    assert_close("dx", &dx, grads.get(xv.as_tensor()).unwrap(), 0.0, 0.0);
    assert_close("dw", &dw, grads.get(wv.as_tensor()).unwrap(), 0.0, 0.0);
}

#[test]
fn max_pool2d_second_backward_recomputes_the_same_gradient() {
    let t = nn_fixture("pool_resnet_stem");
    let pool = resnet_stem_pool();
    // Zeros from a ReLU make ties: the first maximum of each window gets the gradient.
    let x = Var::from_tensor(&t["x"].relu().unwrap()).unwrap();
    let loss = pool.forward(x.as_tensor()).unwrap().sum_all().unwrap();
    let first = loss.backward().unwrap(); // from the indices the forward kept
    let second = loss.backward().unwrap(); // recomputed
    assert_close(
        "second backward",
        second.get(x.as_tensor()).unwrap(),
        first.get(x.as_tensor()).unwrap(),
        0.0,
        0.0,
    );
}

#[test]
fn adaptive_avg_pool2d_matches_pytorch() {
    for (name, size) in [("adaptive_1x1", (1, 1)), ("adaptive_3x2", (3, 2))] {
        let pool = AdaptiveAvgPool2d::new(size);
        let t = nn_fixture(name);
        let (out, gx, _) = forward_backward(&t, |x| pool.forward(x));
        assert_close(&format!("{name}: output"), &out, &t["out"], TOL, TOL);
        assert_close(&format!("{name}: grad x"), &gx, &t["grad_x"], TOL, TOL);
    }
}

#[test]
fn flatten_follows_pytorch_dims() {
    let x = candle_core::Tensor::zeros(
        (2, 3, 4, 5),
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    assert_eq!(Flatten::default().forward(&x).unwrap().dims(), &[2, 60]);
    assert_eq!(Flatten::new(2, 3).forward(&x).unwrap().dims(), &[2, 3, 20]);
    assert!(Flatten::new(3, 1).forward(&x).is_err());
}

/// PyTorch's semantics: NaN propagates forward; the gradient passes only where the output is
/// positive (`threshold_backward`), for both inputs of the residual form.
#[test]
fn relu_and_residual_relu_follow_pytorch() {
    use flambeau_kernels::relu::{add_relu, relu};
    let a = Var::new(&[-2f32, -0.0, 0.5, f32::NAN, 3.0], &Device::Cpu).unwrap();
    let b = Var::new(&[1f32, 0.0, -1.0, 1.0, -1.0], &Device::Cpu).unwrap();
    let y = relu(a.as_tensor()).unwrap();
    let v = y.to_vec1::<f32>().unwrap();
    assert_eq!(&v[..3], &[0.0, 0.0, 0.5]);
    assert!(v[3].is_nan());
    assert_eq!(v[4], 3.0);
    // Gradients of Σ wᵢ·yᵢ with respect to each var.
    let grads_of = |y: candle_core::Tensor, vars: &[&Var]| -> Vec<Vec<f32>> {
        let w = candle_core::Tensor::new(&[1f32, 2.0, 3.0, 4.0, 5.0], &Device::Cpu).unwrap();
        let grads = (y * w).unwrap().sum_all().unwrap().backward().unwrap();
        vars.iter()
            .map(|v| grads.get(v.as_tensor()).unwrap().to_vec1().unwrap())
            .collect()
    };
    assert_eq!(grads_of(y, &[&a]), [[0.0, 0.0, 3.0, 0.0, 5.0]]);

    let y = add_relu(a.as_tensor(), b.as_tensor()).unwrap();
    let v = y.to_vec1::<f32>().unwrap();
    assert_eq!(&v[..3], &[0.0, 0.0, 0.0]);
    assert!(v[3].is_nan());
    assert_eq!(v[4], 2.0);
    assert_eq!(grads_of(y, &[&a, &b]), [[0.0, 0.0, 0.0, 0.0, 5.0]; 2]);
}
