//! The model and device flags: `--arch`, `--device`, and the freshly initialised ResNet.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use flambeau_core::VarStore;
use flambeau_vision::models::{ResNet, ResNetConfig};

/// The architectures `--arch` accepts.
pub const ARCHS: [&str; 5] = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"];

/// `--device cpu|cuda|cuda:N`; `doing` says what for (`evaluating`): one device only.
pub fn parse_device(spec: &str, doing: &str) -> Result<Device> {
    if let Some((first, _)) = spec.split_once(',') {
        bail!("--device {spec}: {doing} on several GPUs at once is not available; use one GPU (--device {first})");
    }
    Ok(parse_devices(spec)?
        .into_iter()
        .next()
        .expect("parse_devices returns at least one"))
}

/// `--device cpu|cuda|cuda:N|cuda:N,M,…`: the listed devices, opened, in order.
pub fn parse_devices(spec: &str) -> Result<Vec<Device>> {
    if spec == "cpu" {
        return Ok(vec![Device::Cpu]);
    }
    // `cuda` alone is the first GPU (under a launcher: each process's cuda:LOCAL_RANK).
    let spec_ids = if spec == "cuda" { "cuda:0" } else { spec };
    let Some(ids) = spec_ids.strip_prefix("cuda:") else {
        bail!("--device `{spec}`: expected cpu, cuda:N or cuda:N,M");
    };
    let ids: Vec<usize> = ids
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()
        .with_context(|| format!("--device `{spec}`: GPU indices must be numbers"))?;
    if let Some(dup) = ids
        .iter()
        .enumerate()
        .find_map(|(i, id)| ids[..i].contains(id).then_some(id))
    {
        bail!("--device {spec}: cuda:{dup} is listed twice; for several replicas on one GPU use --replicas N");
    }
    ids.iter()
        .map(|&id| {
            Device::new_cuda(id).with_context(|| {
                format!("--device {spec}: cannot open cuda:{id} (this flambeau may be built without CUDA support); use --device cpu")
            })
        })
        .collect()
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
