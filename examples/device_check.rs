//! One seeded ResNet-18 training step on two paths, compared tensor by tensor: the CPU's fast
//! kernels against a GPU (`--device cuda:0`, in a CUDA build), or against the device-generic path
//! on the CPU (`--device cpu`, the code a GPU runs). Loss, every gradient, every updated parameter
//! and running statistic must agree within the stated tolerance; exits with 1 otherwise.
//!
//! ```sh
//! cargo run --release --example device_check -- --device cpu
//! ```

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, ModuleT, Tensor};
use flambeau::kernels::{set_kernel_mode, KernelMode};
use flambeau::nn::loss::{cross_entropy, CrossEntropyOptions};
use flambeau::optim::{Optimizer, ParamGroup, Sgd, SgdConfig};
use flambeau::vision::models::{ResNet, ResNetConfig};
use flambeau::{LoadOptions, StateDict, VarStore};

/// Relative to each tensor's largest entry (GPU GEMMs sum in another order).
const RTOL: f64 = 2e-3;
const BATCH: usize = 8;
const SIZE: usize = 64;

/// Everything one step produced, on the CPU: `loss`, `grad.NAME`, `after.NAME`.
type StepResult = BTreeMap<String, Tensor>;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let spec = match args.as_slice() {
        [] => "cpu".to_string(),
        [flag, spec] if flag == "--device" => spec.clone(),
        _ => bail!("usage: device_check [--device cpu|cuda:N]"),
    };
    let device = match spec.as_str() {
        "cpu" => Device::Cpu,
        s => {
            let id: usize = s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .with_context(|| format!("--device {s}: expected cpu or cuda:N"))?;
            flambeau::kernels::device::open_cuda(id).with_context(|| {
                format!("--device {s}: no GPU (is this a CUDA build? `cargo xtask gpu bundle`)")
            })?
        }
    };
    let init = initial_weights()?;
    set_kernel_mode(KernelMode::Fast);
    let reference = train_step(&init, &Device::Cpu)?;
    // On the CPU the other side is the generic path; on a GPU it is what runs there anyway.
    set_kernel_mode(KernelMode::Generic);
    let other = train_step(&init, &device)?;
    let what = if device.is_cpu() {
        "cpu (generic kernels)"
    } else {
        spec.as_str()
    };
    println!(
        "ResNet-18 training step, batch {BATCH} at {SIZE}x{SIZE}: cpu (fast kernels) vs {what}"
    );
    let mut worst = (0.0f64, String::new());
    for (name, expected) in &reference {
        let got = &other[name];
        let err = relative_error(got, expected)?;
        if err > worst.0 {
            worst = (err, name.clone());
        }
    }
    let loss = |r: &StepResult| -> Result<f32> { Ok(r["loss"].to_scalar::<f32>()?) };
    println!("loss {:.6} vs {:.6}", loss(&reference)?, loss(&other)?);
    println!(
        "{} tensors compared; worst relative difference {:.2e} ({}), tolerance {RTOL:.0e}",
        reference.len(),
        worst.0,
        worst.1
    );
    if worst.0 > RTOL {
        println!("FAILED");
        std::process::exit(1);
    }
    println!("ok");
    Ok(())
}

fn initial_weights() -> Result<StateDict> {
    let vs = VarStore::with_seed(&Device::Cpu, DType::F32, 7);
    ResNet::new(vs.root(), ResNetConfig::resnet18(10))?;
    Ok(vs.state_dict())
}

/// Deterministic inputs in [-1, 1) without depending on a device's random generator.
fn batch(device: &Device) -> Result<(Tensor, Tensor)> {
    let n = BATCH * 3 * SIZE * SIZE;
    let x: Vec<f32> = (0..n)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
        .collect();
    let y: Vec<u32> = (0..BATCH as u32).map(|i| i * 3 % 10).collect();
    Ok((
        Tensor::from_vec(x, (BATCH, 3, SIZE, SIZE), device)?,
        Tensor::from_vec(y, BATCH, device)?,
    ))
}

fn train_step(init: &StateDict, device: &Device) -> Result<StepResult> {
    let vs = VarStore::new(device, DType::F32);
    let model = ResNet::new(vs.root(), ResNetConfig::resnet18(10))?;
    vs.load_state_dict(init, &LoadOptions::default())?;
    let config = SgdConfig {
        lr: 0.05,
        momentum: 0.9,
        nesterov: true,
        weight_decay: 1e-4,
        ..Default::default()
    };
    let mut opt = Sgd::new(vec![ParamGroup::new(vs.parameters())], config)?;
    let (x, y) = batch(device)?;
    let options = CrossEntropyOptions {
        label_smoothing: 0.1,
        ..Default::default()
    };
    let loss = cross_entropy(&model.forward_t(&x, true)?, &y, &options)?;
    let grads = loss.backward()?;
    opt.step(&grads)?;
    let mut out = StepResult::new();
    out.insert("loss".into(), loss.to_device(&Device::Cpu)?);
    for (name, var) in vs.named_parameters() {
        let g = grads
            .get(var.as_tensor())
            .with_context(|| format!("no gradient for {name}"))?;
        out.insert(format!("grad.{name}"), g.to_device(&Device::Cpu)?);
    }
    for (name, t) in vs.state_dict().iter() {
        out.insert(format!("after.{name}"), t.to_device(&Device::Cpu)?);
    }
    Ok(out)
}

/// `max |a - b| / max |b|` (0 when both are zero); integer tensors must be equal.
fn relative_error(a: &Tensor, b: &Tensor) -> Result<f64> {
    let (a, b) = (a.to_dtype(DType::F64)?, b.to_dtype(DType::F64)?);
    let diff = (&a - &b)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f64>()?;
    let scale = b.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()?;
    Ok(if scale == 0.0 { diff } else { diff / scale })
}
