//! Recognising a torchvision ResNet in a state dict: which architecture and how many classes.

use flambeau_core::StateDict;

use super::resnet::{BlockKind, ResNetConfig};
use crate::{Error, Result};

/// Every architecture [`ResNetConfig::by_name`] builds, by torchvision's function name.
pub const ARCHITECTURES: [&str; 7] = [
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "wide_resnet50_2",
    "resnext50_32x4d",
];

impl ResNetConfig {
    /// The configuration whose keys and shapes `sd` has: the architecture as
    /// [`ResNetConfig::architecture`] recognises it, classes from `fc.weight`. Wrapper prefixes
    /// (`module.`, `_orig_mod.`) are ignored.
    pub fn infer(sd: &StateDict) -> Result<Self> {
        let sd = sd.strip_wrappers();
        let num_classes = num_classes(&sd)?;
        let name = Self::architecture(&sd).ok_or_else(|| {
            Error::Config(format!(
                "cannot tell which ResNet the weights hold; name the architecture ({})",
                ARCHITECTURES.join(", ")
            ))
        })?;
        Self::by_name(name, num_classes)
    }

    /// The torchvision architecture whose keys and shapes `sd` has (blocks per stage, block
    /// kind, width of the first 3×3 convolution), without looking at the classifier, so that a
    /// backbone saved without its head is recognised too. Wrapper prefixes are ignored.
    pub fn architecture(sd: &StateDict) -> Option<&'static str> {
        let sd = sd.strip_wrappers();
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
        ARCHITECTURES.into_iter().find(|name| {
            let Ok(c) = Self::by_name(name, 1) else {
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

    /// torchvision's function name for this configuration (`"resnet50"`), when it is one of
    /// [`ARCHITECTURES`].
    pub fn name(&self) -> Option<&'static str> {
        ARCHITECTURES.into_iter().find(|name| {
            Self::by_name(name, self.num_classes).is_ok_and(|c| {
                (c.block, c.layers, c.groups, c.width_per_group)
                    == (self.block, self.layers, self.groups, self.width_per_group)
            })
        })
    }
}

/// Output classes of the classifier `fc` (wrapper prefixes already stripped).
pub(crate) fn num_classes(sd: &StateDict) -> Result<usize> {
    sd.get("fc.weight")
        .and_then(|w| w.dims().first().copied())
        .ok_or_else(|| {
            Error::Config(
                "the checkpoint has no `fc.weight`: is it a torchvision ResNet?".to_string(),
            )
        })
}
