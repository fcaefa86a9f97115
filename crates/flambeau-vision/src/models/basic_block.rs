//! torchvision's `BasicBlock` (ResNet-18/34).

use candle_core::{ModuleT, Tensor};
use flambeau_core::VarBuilder;
use flambeau_nn::{BatchNorm2d, BatchNormConfig, Conv2d, Conv2dConfig};

use super::downsample::{conv_init, Downsample};
use crate::Result;

/// Two 3×3 convolutions with a residual connection; expansion 1.
#[derive(Debug)]
pub struct BasicBlock {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    conv2: Conv2d,
    bn2: BatchNorm2d,
    downsample: Option<Downsample>,
}

impl BasicBlock {
    pub const EXPANSION: usize = 1;

    /// Registers `conv1, bn1, conv2, bn2[, downsample]` in torchvision's order.
    pub fn new(
        vb: VarBuilder,
        inplanes: usize,
        planes: usize,
        stride: usize,
        dilation: usize,
        needs_downsample: bool,
    ) -> Result<Self> {
        let conv3x3 = |vb: VarBuilder, i, o, stride| {
            Conv2d::with_init(
                vb,
                i,
                o,
                3,
                Conv2dConfig {
                    stride,
                    padding: dilation,
                    dilation,
                    groups: 1,
                    bias: false,
                },
                conv_init(),
            )
        };
        let bn = BatchNormConfig::default();
        Ok(Self {
            conv1: conv3x3(vb.pp("conv1"), inplanes, planes, stride)?,
            bn1: BatchNorm2d::new(vb.pp("bn1"), planes, bn)?,
            conv2: conv3x3(vb.pp("conv2"), planes, planes, 1)?,
            bn2: BatchNorm2d::new(vb.pp("bn2"), planes, bn)?,
            downsample: needs_downsample
                .then(|| {
                    Downsample::new(
                        vb.pp("downsample"),
                        inplanes,
                        planes * Self::EXPANSION,
                        stride,
                    )
                })
                .transpose()?,
        })
    }
}

impl ModuleT for BasicBlock {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let out = self
            .bn1
            .forward_relu_t(&self.conv1.forward_t(x, train)?, train)?;
        let out = self.conv2.forward_t(&out, train)?;
        let identity = match &self.downsample {
            Some(d) => d.forward_t(x, train)?,
            None => x.clone(),
        };
        self.bn2.forward_add_relu_t(&out, &identity, train)
    }
}
