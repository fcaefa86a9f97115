//! torchvision's `Bottleneck` (ResNet-50/101/152, Wide ResNet, ResNeXt).

use candle_core::{ModuleT, Tensor};
use flambeau_core::VarBuilder;
use flambeau_nn::{BatchNorm2d, BatchNormConfig, Conv2d, Conv2dConfig};

use super::downsample::{conv_init, Downsample};
use crate::Result;

/// 1×1 reduce, 3×3 (grouped, strided here as in torchvision's "ResNet v1.5"), 1×1 expand;
/// expansion 4.
#[derive(Debug)]
pub struct Bottleneck {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    conv2: Conv2d,
    bn2: BatchNorm2d,
    conv3: Conv2d,
    bn3: BatchNorm2d,
    downsample: Option<Downsample>,
}

impl Bottleneck {
    pub const EXPANSION: usize = 4;

    /// Registers `conv1, bn1, conv2, bn2, conv3, bn3[, downsample]` in torchvision's order.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        vb: VarBuilder,
        inplanes: usize,
        planes: usize,
        stride: usize,
        groups: usize,
        base_width: usize,
        dilation: usize,
        needs_downsample: bool,
    ) -> Result<Self> {
        let width = planes * base_width / 64 * groups;
        let out = planes * Self::EXPANSION;
        let bn = BatchNormConfig::default();
        let conv = |vb: VarBuilder, i, o, k, cfg| Conv2d::with_init(vb, i, o, k, cfg, conv_init());
        let pointwise = Conv2dConfig {
            bias: false,
            ..Default::default()
        };
        Ok(Self {
            conv1: conv(vb.pp("conv1"), inplanes, width, 1, pointwise)?,
            bn1: BatchNorm2d::new(vb.pp("bn1"), width, bn)?,
            conv2: conv(
                vb.pp("conv2"),
                width,
                width,
                3,
                Conv2dConfig {
                    stride,
                    padding: dilation,
                    dilation,
                    groups,
                    bias: false,
                },
            )?,
            bn2: BatchNorm2d::new(vb.pp("bn2"), width, bn)?,
            conv3: conv(vb.pp("conv3"), width, out, 1, pointwise)?,
            bn3: BatchNorm2d::new(vb.pp("bn3"), out, bn)?,
            downsample: needs_downsample
                .then(|| Downsample::new(vb.pp("downsample"), inplanes, out, stride))
                .transpose()?,
        })
    }
}

impl ModuleT for Bottleneck {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let out = self
            .bn1
            .forward_relu_t(&self.conv1.forward_t(x, train)?, train)?;
        let out = self
            .bn2
            .forward_relu_t(&self.conv2.forward_t(&out, train)?, train)?;
        let out = self.conv3.forward_t(&out, train)?;
        let identity = match &self.downsample {
            Some(d) => d.forward_t(x, train)?,
            None => x.clone(),
        };
        self.bn3.forward_add_relu_t(&out, &identity, train)
    }
}
