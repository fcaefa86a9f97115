//! What a training run does, on two paths, compared tensor by tensor: the CPU's fast kernels
//! against a GPU (`--device cuda:0`, in a CUDA build), or against the device-generic path on the
//! CPU (`--device cpu`, the code a GPU runs). Each named check prints
//! `check NAME: ok|FAILED worst=<relative difference> tol=<tolerance>`; the program exits with 1
//! when any fails. `--only NAME` runs one check.
//!
//! ```sh
//! cargo run --release --example device_check -- --device cpu
//! cargo run --release --example device_check -- --device cpu --only adam
//! ```

mod compare;
mod steps;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use flambeau::kernels::{set_kernel_mode, KernelMode};

use compare::{Metric, StepResult};
use steps::{Opt, ResNetStep};

/// Both sides of a check: the reference and the side being checked.
type Sides = Result<(StepResult, StepResult)>;

/// One named comparison: what runs on each side, and how close the sides must be.
struct Check {
    name: &'static str,
    metric: Metric,
    tol: f64,
    run: Box<dyn Fn(&Device) -> Sides>,
}

/// The reference on the CPU's fast kernels, the other side on `device` (the generic path).
fn both(device: &Device, step: impl Fn(&Device) -> Result<StepResult>) -> Sides {
    set_kernel_mode(KernelMode::Fast);
    let reference = step(&Device::Cpu)?;
    set_kernel_mode(KernelMode::Generic);
    let other = step(device)?;
    Ok((reference, other))
}

fn resnet(name: &'static str, metric: Metric, tol: f64, step: ResNetStep) -> Check {
    Check {
        name,
        metric,
        tol,
        run: Box::new(move |d| both(d, |d| steps::resnet_step(&step, d))),
    }
}

// Tolerances. Measured with `--device cpu` (fast vs generic kernels, worst tensor):
//   resnet18-64x64 5.8e-6, resnet18-33x40 8.2e-3, resnet18-33x40-f64 4.2e-15, batchnorm-eval
//   1.2e-5, label-smoothing 1.2e-5, adam 1.3e-4, adamw-clip-grad-norm 1.2e-3, dataloader-steps
//   7.9e-3, replicas-1-vs-2 5.8e-7.
// * f32 ResNet steps compare each tensor as a whole (relative L2 norm of the difference), not
//   per entry: a ReLU whose input is within rounding of 0 flips between summation orders. At
//   33x40 one such flip at the output of layer3.0 (where the error jumps) takes every gradient
//   below it from ~4e-6 to ~7e-3 while layer3.1 and up stay at ~4e-6 (the f64 run of the same
//   step agrees to 4e-15, so the arithmetic is the same); the data-loader run has one in
//   layer1. Per entry relative to the tensor's largest these read up to ~1e-1. AdamW's first
//   step moves a parameter by about lr·sign(grad), which makes bias entries with tiny
//   gradients sensitive (1.2e-3). 2e-2 sits above what ties cost and well below what a wrong
//   kernel typically gives (order 1).
// * f64: the paths must agree up to summation order, 1e-9 per entry.
// * replicas: the same kernels on the same device, only the split of the batch differs; per
//   entry relative to each tensor's largest, 1e-4 (measured 5.8e-7: summation order only).
//
// `DEVICE_CHECK_VERBOSE=1` prints every tensor's difference.
const F32_TOL: f64 = 2e-2;

fn checks() -> Vec<Check> {
    let sgd = ResNetStep::sgd;
    vec![
        resnet("resnet18-64x64", Metric::L2, F32_TOL, sgd(64, 64)),
        resnet("resnet18-33x40", Metric::L2, F32_TOL, sgd(33, 40)),
        resnet(
            "resnet18-33x40-f64",
            Metric::MaxEntry,
            1e-9,
            ResNetStep {
                dtype: DType::F64,
                ..sgd(33, 40)
            },
        ),
        resnet(
            "batchnorm-eval",
            Metric::L2,
            F32_TOL,
            ResNetStep {
                eval_forward: true,
                ..sgd(32, 32)
            },
        ),
        resnet(
            "label-smoothing",
            Metric::L2,
            F32_TOL,
            ResNetStep {
                label_smoothing: 0.1,
                ..sgd(32, 32)
            },
        ),
        resnet(
            "adam",
            Metric::L2,
            F32_TOL,
            ResNetStep {
                opt: Opt::Adam,
                ..sgd(32, 32)
            },
        ),
        resnet(
            "adamw-clip-grad-norm",
            Metric::L2,
            F32_TOL,
            ResNetStep {
                opt: Opt::AdamWClip,
                ..sgd(32, 32)
            },
        ),
        Check {
            name: "dataloader-steps",
            metric: Metric::L2,
            tol: F32_TOL,
            run: Box::new(|d| {
                set_kernel_mode(KernelMode::Fast);
                let reference = steps::loader_steps(&Device::Cpu, false)?;
                set_kernel_mode(KernelMode::Generic);
                Ok((reference, steps::loader_steps(d, true)?))
            }),
        },
        Check {
            name: "replicas-1-vs-2",
            metric: Metric::MaxEntry,
            tol: 1e-4,
            run: Box::new(|d| {
                set_kernel_mode(KernelMode::Generic);
                Ok((steps::replica_step(d, 1)?, steps::replica_step(d, 2)?))
            }),
        },
    ]
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: device_check [--device cpu|cuda:N] [--only NAME]";
    let (mut spec, mut only) = ("cpu".to_string(), None);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .with_context(|| format!("{flag}: missing value; {usage}"))?;
        match flag.as_str() {
            "--device" => spec = value.clone(),
            "--only" => only = Some(value.clone()),
            _ => bail!("{usage}"),
        }
    }
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
    let mut checks = checks();
    if let Some(name) = &only {
        checks.retain(|c| c.name == name);
        if checks.is_empty() {
            let names: Vec<_> = self::checks().iter().map(|c| c.name).collect();
            bail!("--only {name}: no such check; one of {}", names.join(", "));
        }
    }
    let what = if device.is_cpu() {
        "cpu (generic kernels)"
    } else {
        spec.as_str()
    };
    println!("cpu (fast kernels) vs {what}; batch {}", steps::BATCH);
    let mut failed = 0;
    for check in &checks {
        let (reference, other) =
            (check.run)(&device).with_context(|| format!("check {}", check.name))?;
        let (worst, at) = compare::worst(&reference, &other, check.metric)?;
        let ok = worst <= check.tol;
        failed += usize::from(!ok);
        println!(
            "check {}: {} worst={worst:.2e} tol={:.0e} ({} tensors, worst {at})",
            check.name,
            if ok { "ok" } else { "FAILED" },
            check.tol,
            reference.len(),
        );
    }
    if failed > 0 {
        println!("{failed} of {} checks FAILED", checks.len());
        std::process::exit(1);
    }
    Ok(())
}
