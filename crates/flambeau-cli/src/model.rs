//! Building the model a run trains or evaluates, and recognising it in a checkpoint.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use flambeau_core::{KeyRule, StateDict, VarStore};
use flambeau_vision::models::resnet::BlockKind;
use flambeau_vision::models::{ResNet, ResNetConfig};

/// The architectures `--arch` accepts.
pub const ARCHS: [&str; 5] = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"];

/// Every architecture a checkpoint can be recognised as.
const KNOWN_ARCHS: [&str; 7] = [
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "wide_resnet50_2",
    "resnext50_32x4d",
];

/// `--device cpu|cuda:N|cuda:N,M`.
pub fn parse_device(spec: &str) -> Result<Device> {
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
            "--device {spec}: data-parallel training over several GPUs is not available in this build yet; train on one GPU (--device cuda:{}) or on the CPU",
            ids[0]
        );
    }
    Device::new_cuda(ids[0]).with_context(|| {
        format!("--device {spec}: cannot open the GPU (this flambeau may be built without CUDA support); use --device cpu")
    })
}

/// The torchvision architecture whose keys and shapes the state dict has, if any.
pub fn infer_arch(sd: &StateDict) -> Option<&'static str> {
    let blocks = |stage: usize| {
        let prefix = format!("layer{stage}.");
        let mut ids: Vec<usize> = sd
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix)?.split('.').next()?.parse().ok())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    };
    let layers = [blocks(1), blocks(2), blocks(3), blocks(4)];
    let conv2 = sd.get("layer1.0.conv2.weight")?.dims().to_vec();
    let bottleneck = sd.contains_key("layer1.0.conv3.weight");
    KNOWN_ARCHS.into_iter().find(|name| {
        let Ok(c) = ResNetConfig::by_name(name, 1) else {
            return false;
        };
        let width = c.width_per_group * c.groups;
        let expected_conv2 = match c.block {
            BlockKind::Basic => vec![64, 64, 3, 3],
            BlockKind::Bottleneck => vec![width, width / c.groups, 3, 3],
        };
        c.layers == layers
            && (c.block == BlockKind::Bottleneck) == bottleneck
            && expected_conv2 == conv2
    })
}

/// Output classes of the checkpoint's `fc` layer.
pub fn num_classes(sd: &StateDict) -> Option<usize> {
    sd.get("fc.weight").map(|w| w.dims()[0])
}

/// Key rules that undo the wrappers PyTorch adds: DataParallel's `module.` and `torch.compile`'s
/// `_orig_mod.`, when every key carries them.
pub fn unwrap_rules(sd: &StateDict) -> Vec<KeyRule> {
    let mut keys: Vec<String> = sd.keys().map(str::to_string).collect();
    let mut rules = Vec::new();
    for prefix in ["module.", "_orig_mod."] {
        if !keys.is_empty() && keys.iter().all(|k| k.starts_with(prefix)) {
            rules.push(KeyRule::strip_prefix(prefix));
            keys = keys.iter().map(|k| k[prefix.len()..].to_string()).collect();
        }
    }
    rules
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
