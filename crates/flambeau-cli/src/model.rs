//! The model and device flags: `--arch`, `--device`, and the freshly initialised ResNet.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use flambeau_core::VarStore;
use flambeau_vision::models::{ResNet, ResNetConfig};

/// The architectures `--arch` accepts.
pub const ARCHS: [&str; 5] = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"];

/// `--device cpu|cuda:N|cuda:N,M`; `doing` says what for (`training`, `evaluating`).
pub fn parse_device(spec: &str, doing: &str) -> Result<Device> {
    if spec == "cpu" {
        return Ok(Device::Cpu);
    }
    let Some(ids) = spec.strip_prefix("cuda:") else {
        bail!("--device `{spec}`: expected cpu, cuda:N or cuda:N,M");
    };
    let ids: Vec<usize> = ids
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()
        .with_context(|| format!("--device `{spec}`: GPU indices must be numbers"))?;
    if ids.len() > 1 {
        bail!(
            "--device {spec}: {doing} on several GPUs at once is not available in this build yet; use one GPU (--device cuda:{}) or the CPU",
            ids[0]
        );
    }
    Device::new_cuda(ids[0]).with_context(|| {
        format!("--device {spec}: cannot open the GPU (this flambeau may be built without CUDA support); use --device cpu")
    })
}

/// A freshly initialised ResNet (seeded, f32).
pub fn build(
    arch: &str,
    num_classes: usize,
    device: &Device,
    seed: u64,
) -> Result<(VarStore, ResNet)> {
    let vs = VarStore::with_seed(device, DType::F32, seed);
    let config = ResNetConfig::by_name(arch, num_classes)?;
    let model = ResNet::new(vs.root(), config)?;
    Ok((vs, model))
}
