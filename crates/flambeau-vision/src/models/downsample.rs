//! The pieces every residual block shares: torchvision's convolution initialisation and the
//! `downsample` shortcut (their own file, so that the blocks and the ResNet do not import each
//! other for them).

use candle_core::{Module, ModuleT, Tensor};
use flambeau_core::{FanMode, Init, Nonlinearity, VarBuilder};
use flambeau_nn::{BatchNorm2d, BatchNormConfig, Conv2d, Conv2dConfig};

use crate::Result;

/// torchvision's convolution initialisation: kaiming-normal, fan_out, relu.
pub(crate) fn conv_init() -> Init {
    Init::KaimingNormal {
        mode: FanMode::FanOut,
        nonlinearity: Nonlinearity::Relu,
    }
}

/// `downsample = Sequential(conv1x1(inplanes, out, stride), BatchNorm2d(out))`.
#[derive(Debug)]
pub(crate) struct Downsample {
    conv: Conv2d,
    bn: BatchNorm2d,
}

impl Downsample {
    pub(crate) fn new(vb: VarBuilder, inplanes: usize, out: usize, stride: usize) -> Result<Self> {
        let cfg = Conv2dConfig {
            stride,
            bias: false,
            ..Default::default()
        };
        Ok(Self {
            conv: Conv2d::with_init(vb.pp(0), inplanes, out, 1, cfg, conv_init())?,
            bn: BatchNorm2d::new(vb.pp(1), out, BatchNormConfig::default())?,
        })
    }
}

impl ModuleT for Downsample {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.bn.forward_t(&self.conv.forward(x)?, train)
    }
}
