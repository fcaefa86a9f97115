//! torchvision's ResNet family, name for name and shape for shape.

use candle_core::{DType, Module, ModuleT, Tensor};
use flambeau_core::VarBuilder;
use flambeau_nn::{
    AdaptiveAvgPool2d, BatchNorm2d, BatchNormConfig, Conv2d, Conv2dConfig, Linear, MaxPool2d,
    MaxPool2dConfig,
};

use super::basic_block::BasicBlock;
use super::bottleneck::Bottleneck;
use super::downsample::conv_init;
use crate::{Error, Result};

/// Which residual block a ResNet stacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// Two 3×3 convolutions (ResNet-18/34).
    Basic,
    /// 1×1, 3×3, 1×1 with expansion 4 (ResNet-50 and deeper, Wide ResNet, ResNeXt).
    Bottleneck,
}

/// Everything that distinguishes the members of the family (torchvision's `ResNet.__init__`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResNetConfig {
    /// Block type.
    pub block: BlockKind,
    /// Blocks per stage (`[2, 2, 2, 2]` for ResNet-18).
    pub layers: [usize; 4],
    /// Output classes of `fc`.
    pub num_classes: usize,
    /// Zero the last BatchNorm of each block so that blocks start as identities.
    pub zero_init_residual: bool,
    /// Groups of the 3×3 convolutions (ResNeXt: 32).
    pub groups: usize,
    /// Width per group (Wide ResNet: 128, ResNeXt-50 32x4d: 4).
    pub width_per_group: usize,
}

impl ResNetConfig {
    fn new(block: BlockKind, layers: [usize; 4], num_classes: usize) -> Self {
        Self {
            block,
            layers,
            num_classes,
            zero_init_residual: false,
            groups: 1,
            width_per_group: 64,
        }
    }

    /// ResNet-18.
    pub fn resnet18(num_classes: usize) -> Self {
        Self::new(BlockKind::Basic, [2, 2, 2, 2], num_classes)
    }
    /// ResNet-34.
    pub fn resnet34(num_classes: usize) -> Self {
        Self::new(BlockKind::Basic, [3, 4, 6, 3], num_classes)
    }
    /// ResNet-50.
    pub fn resnet50(num_classes: usize) -> Self {
        Self::new(BlockKind::Bottleneck, [3, 4, 6, 3], num_classes)
    }
    /// ResNet-101.
    pub fn resnet101(num_classes: usize) -> Self {
        Self::new(BlockKind::Bottleneck, [3, 4, 23, 3], num_classes)
    }
    /// ResNet-152.
    pub fn resnet152(num_classes: usize) -> Self {
        Self::new(BlockKind::Bottleneck, [3, 8, 36, 3], num_classes)
    }
    /// Wide ResNet-50-2.
    pub fn wide_resnet50_2(num_classes: usize) -> Self {
        Self {
            width_per_group: 128,
            ..Self::resnet50(num_classes)
        }
    }
    /// ResNeXt-50 32x4d.
    pub fn resnext50_32x4d(num_classes: usize) -> Self {
        Self {
            groups: 32,
            width_per_group: 4,
            ..Self::resnet50(num_classes)
        }
    }

    /// The configuration by torchvision's function name (`"resnet50"`).
    pub fn by_name(name: &str, num_classes: usize) -> Result<Self> {
        Ok(match name {
            "resnet18" => Self::resnet18(num_classes),
            "resnet34" => Self::resnet34(num_classes),
            "resnet50" => Self::resnet50(num_classes),
            "resnet101" => Self::resnet101(num_classes),
            "resnet152" => Self::resnet152(num_classes),
            "wide_resnet50_2" => Self::wide_resnet50_2(num_classes),
            "resnext50_32x4d" => Self::resnext50_32x4d(num_classes),
            other => {
                return Err(Error::Config(format!(
                    "unknown architecture `{other}` (resnet18, resnet34, resnet50, resnet101, resnet152, wide_resnet50_2, resnext50_32x4d)"
                )))
            }
        })
    }

    fn expansion(&self) -> usize {
        match self.block {
            BlockKind::Basic => BasicBlock::EXPANSION,
            BlockKind::Bottleneck => Bottleneck::EXPANSION,
        }
    }
}

#[derive(Debug)]
enum Block {
    Basic(BasicBlock),
    Bottleneck(Bottleneck),
}

impl ModuleT for Block {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        match self {
            Block::Basic(b) => b.forward_t(x, train),
            Block::Bottleneck(b) => b.forward_t(x, train),
        }
    }
}

/// A torchvision ResNet. `forward_t(x, train)` takes `[N, 3, H, W]` and returns logits
/// `[N, num_classes]`; in training BatchNorm uses batch statistics and updates its running ones.
#[derive(Debug)]
pub struct ResNet {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    maxpool: MaxPool2d,
    stages: Vec<Vec<Block>>,
    avgpool: AdaptiveAvgPool2d,
    fc: Linear,
    config: ResNetConfig,
}

impl ResNet {
    /// Builds the network under `vb` (usually `vs.root()`), in torchvision's registration order,
    /// and names the store's model `ResNet` for error messages.
    pub fn new(vb: VarBuilder, config: ResNetConfig) -> Result<Self> {
        if config.groups == 0 || config.width_per_group == 0 || config.num_classes == 0 {
            return Err(Error::Config(
                "groups, width_per_group and num_classes must be positive".into(),
            ));
        }
        if config.block == BlockKind::Basic && (config.groups != 1 || config.width_per_group != 64)
        {
            return Err(Error::Config(
                "BasicBlock only supports groups=1 and base_width=64".into(),
            ));
        }
        vb.store().set_model_name("ResNet");
        let stem = Conv2dConfig {
            stride: 2,
            padding: 3,
            bias: false,
            ..Default::default()
        };
        let conv1 = Conv2d::with_init(vb.pp("conv1"), 3, 64, 7, stem, conv_init())?;
        let bn1 = BatchNorm2d::new(vb.pp("bn1"), 64, BatchNormConfig::default())?;
        let maxpool = MaxPool2d::new(MaxPool2dConfig {
            kernel_size: 3,
            stride: Some(2),
            padding: 1,
            dilation: 1,
            ceil_mode: false,
        });
        let mut inplanes = 64;
        let mut stages = Vec::with_capacity(4);
        for (i, (&blocks, planes)) in config.layers.iter().zip([64, 128, 256, 512]).enumerate() {
            let stride = if i == 0 { 1 } else { 2 };
            let layer = vb.pp(format!("layer{}", i + 1));
            let mut stage = Vec::with_capacity(blocks);
            for b in 0..blocks {
                let (s, downsample) = if b == 0 {
                    (
                        stride,
                        stride != 1 || inplanes != planes * config.expansion(),
                    )
                } else {
                    (1, false)
                };
                let block = match config.block {
                    BlockKind::Basic => Block::Basic(BasicBlock::new(
                        layer.pp(b),
                        inplanes,
                        planes,
                        s,
                        1,
                        downsample,
                    )?),
                    BlockKind::Bottleneck => Block::Bottleneck(Bottleneck::new(
                        layer.pp(b),
                        inplanes,
                        planes,
                        s,
                        config.groups,
                        config.width_per_group,
                        1,
                        downsample,
                    )?),
                };
                if config.zero_init_residual {
                    let last_bn = match config.block {
                        BlockKind::Basic => "bn2",
                        BlockKind::Bottleneck => "bn3",
                    };
                    let name = layer.pp(b).pp(last_bn).full_name("weight");
                    let w = vb.store().get(&name).expect("just registered");
                    w.set(&w.as_tensor().zeros_like()?)?;
                }
                stage.push(block);
                inplanes = planes * config.expansion();
            }
            stages.push(stage);
        }
        let fc = Linear::new(
            vb.pp("fc"),
            512 * config.expansion(),
            config.num_classes,
            true,
        )?;
        Ok(Self {
            conv1,
            bn1,
            maxpool,
            stages,
            avgpool: AdaptiveAvgPool2d::new((1, 1)),
            fc,
            config,
        })
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &ResNetConfig {
        &self.config
    }
}

impl ModuleT for ResNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        if x.rank() != 4 || x.dim(1)? != 3 || x.dtype() == DType::U8 {
            candle_core::bail!(
                "ResNet expects float images [N, 3, H, W], got {:?} {:?}",
                x.dtype(),
                x.dims()
            )
        }
        let mut x = self.bn1.forward_relu_t(&self.conv1.forward(x)?, train)?;
        x = self.maxpool.forward(&x)?;
        for stage in &self.stages {
            for block in stage {
                x = block.forward_t(&x, train)?;
            }
        }
        let x = self.avgpool.forward(&x)?.flatten_from(1)?;
        self.fc.forward(&x)
    }
}

/// `torchvision.models.resnet18(num_classes=…)`.
pub fn resnet18(vb: VarBuilder, num_classes: usize) -> Result<ResNet> {
    ResNet::new(vb, ResNetConfig::resnet18(num_classes))
}
/// `torchvision.models.resnet34(num_classes=…)`.
pub fn resnet34(vb: VarBuilder, num_classes: usize) -> Result<ResNet> {
    ResNet::new(vb, ResNetConfig::resnet34(num_classes))
}
/// `torchvision.models.resnet50(num_classes=…)`.
pub fn resnet50(vb: VarBuilder, num_classes: usize) -> Result<ResNet> {
    ResNet::new(vb, ResNetConfig::resnet50(num_classes))
}
/// `torchvision.models.resnet101(num_classes=…)`.
pub fn resnet101(vb: VarBuilder, num_classes: usize) -> Result<ResNet> {
    ResNet::new(vb, ResNetConfig::resnet101(num_classes))
}
/// `torchvision.models.resnet152(num_classes=…)`.
pub fn resnet152(vb: VarBuilder, num_classes: usize) -> Result<ResNet> {
    ResNet::new(vb, ResNetConfig::resnet152(num_classes))
}
