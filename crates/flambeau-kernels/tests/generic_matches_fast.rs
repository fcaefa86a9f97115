//! The device-generic path (what a GPU runs) against the fast CPU kernels, on the same inputs:
//! outputs and every gradient, over the geometries of a ResNet and the awkward ones (stride 2 on
//! odd and non-square sizes, ties in max-pool windows). Both paths are also checked against
//! PyTorch by the layer suites; this pins them to each other on shapes the fixtures do not have.
//!
//! The kernel mode is process-wide, so everything runs in one test.

use candle_core::{DType, Device, Tensor, Var};
use flambeau_kernels::max_pool::{max_pool2d, MaxPool2dConfig};
use flambeau_kernels::{conv2d, relu, set_kernel_mode, KernelMode};

/// Deterministic pseudo-random values in [-1, 1) (no RNG crate needed).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn tensor(shape: &[usize], seed: u64) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(values(n, seed), shape, &Device::Cpu).unwrap()
}

/// Output and gradients (w.r.t. each input) of `sum(f(inputs) * g)` in `mode`.
fn run(
    mode: KernelMode,
    inputs: &[Tensor],
    f: &dyn Fn(&[Tensor]) -> candle_core::Result<Tensor>,
) -> (Tensor, Vec<Tensor>) {
    set_kernel_mode(mode);
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(t).unwrap())
        .collect();
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let y = f(&ts).unwrap();
    // A gradient with transposed strides, as autograd hands over from a batch norm.
    let g = if y.rank() == 4 {
        let (n, c, h, w) = y.dims4().unwrap();
        tensor(&[1, c, h, w], 99)
            .broadcast_as((n, c, h, w))
            .unwrap()
    } else {
        tensor(y.dims(), 99)
    };
    let grads = (&y * &g).unwrap().sum_all().unwrap().backward().unwrap();
    let dx = ts.iter().map(|t| grads.get(t).unwrap().clone()).collect();
    (y, dx)
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn same(what: &str, inputs: &[Tensor], f: &dyn Fn(&[Tensor]) -> candle_core::Result<Tensor>) {
    let (y_fast, g_fast) = run(KernelMode::Fast, inputs, f);
    let (y_gen, g_gen) = run(KernelMode::Generic, inputs, f);
    let d = max_diff(&y_fast, &y_gen);
    assert!(d < 1e-4, "{what}: outputs differ by {d}");
    for (i, (a, b)) in g_fast.iter().zip(&g_gen).enumerate() {
        let d = max_diff(a, b);
        assert!(d < 1e-4, "{what}: gradient {i} differs by {d}");
    }
}

#[test]
fn generic_path_matches_the_fast_kernels() {
    // (in channels, out channels, kernel, stride, padding, height, width)
    let convs = [
        (3, 8, 7, 2, 3, 32, 32),
        (3, 8, 7, 2, 3, 33, 40),
        (4, 6, 3, 1, 1, 8, 8),
        (4, 6, 3, 2, 1, 16, 16),
        (4, 6, 3, 2, 1, 7, 10),
        (4, 6, 1, 2, 0, 16, 16),
        (4, 6, 1, 2, 0, 7, 10),
        (2, 3, 3, 2, 0, 9, 8),
        // A ResNet's last stage on a 32×32 image: 1×1 and 2×2 maps.
        (8, 8, 3, 1, 1, 1, 1),
        (8, 8, 3, 2, 1, 2, 2),
        (8, 8, 3, 1, 1, 2, 2),
        (8, 8, 1, 2, 0, 2, 2),
        (512, 512, 3, 1, 1, 1, 1),
        (64, 64, 3, 1, 1, 8, 8),
        (64, 128, 3, 2, 1, 8, 8),
        (64, 128, 1, 2, 0, 8, 8),
        (256, 512, 3, 2, 1, 2, 2),
    ];
    for (i, &(c, o, k, s, p, h, w)) in convs.iter().enumerate() {
        // Non-negative with zeros, as after a ReLU.
        let x = tensor(&[4, c, h, w], i as u64).relu().unwrap();
        let inputs = [x, tensor(&[o, c, k, k], 100 + i as u64)];
        same(
            &format!("conv2d {c}->{o} k{k} s{s} p{p} on {h}x{w}"),
            &inputs,
            &|t| conv2d(&t[0], &t[1], s, p, 1, 1),
        );
    }
    let pools = [
        (3, 2, 1, 32, 32),
        (3, 2, 1, 9, 10),
        (2, 2, 0, 6, 8),
        (3, 1, 1, 5, 7),
    ];
    for (i, &(k, s, p, h, w)) in pools.iter().enumerate() {
        let config = MaxPool2dConfig {
            kernel_size: k,
            stride: Some(s),
            padding: p,
            dilation: 1,
            ceil_mode: false,
        };
        let x = tensor(&[2, 3, h, w], 200 + i as u64);
        same(
            &format!("max_pool k{k} s{s} p{p} on {h}x{w}"),
            std::slice::from_ref(&x),
            &|t| max_pool2d(&t[0], &config),
        );
        // After a ReLU: windows of tied zeros.
        let ties = x.relu().unwrap().affine(4.0, 0.0).unwrap().round().unwrap();
        same(
            &format!("max_pool with ties k{k} s{s} on {h}x{w}"),
            &[ties],
            &|t| max_pool2d(&t[0], &config),
        );
    }
    let x = tensor(&[2, 3, 5, 4], 300);
    same("relu", std::slice::from_ref(&x), &|t| relu::relu(&t[0]));
    same("add_relu", &[x.clone(), tensor(&[2, 3, 5, 4], 301)], &|t| {
        relu::add_relu(&t[0], &t[1])
    });
    assert_eq!(x.dtype(), DType::F32);
    set_kernel_mode(KernelMode::Fast);
}
