//! `nn.Conv2d`.

use candle_core::{Module, Tensor};

use flambeau_core::{Init, Result, VarBuilder};

/// Hyper-parameters of [`Conv2d`] other than the channel counts and kernel size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dConfig {
    /// Step between windows.
    pub stride: usize,
    /// Zero padding on each side.
    pub padding: usize,
    /// Spacing between kernel elements.
    pub dilation: usize,
    /// Blocked connections from input to output channels.
    pub groups: usize,
    /// Whether the layer has a learnable bias.
    pub bias: bool,
}

impl Default for Conv2dConfig {
    fn default() -> Self {
        Self {
            stride: 1,
            padding: 0,
            dilation: 1,
            groups: 1,
            bias: true,
        }
    }
}

/// A 2-D convolution over `[N, C, H, W]` with parameters `weight [out, in/groups, k, k]` and
/// `bias [out]`, initialised as PyTorch does (kaiming-uniform a=√5, bias U(±1/√fan_in)).
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    config: Conv2dConfig,
}

impl Conv2d {
    /// Registers `weight` (and `bias`) under `vb` with PyTorch's default initialisation.
    pub fn new(
        vb: VarBuilder,
        in_channels: usize,
        out_channels: usize,
        kernel_size: usize,
        config: Conv2dConfig,
    ) -> Result<Self> {
        Self::with_init(
            vb,
            in_channels,
            out_channels,
            kernel_size,
            config,
            Init::PYTORCH_DEFAULT_WEIGHT,
        )
    }

    /// Like [`new`](Self::new) with another weight initialisation (torchvision's ResNet uses
    /// kaiming-normal, fan_out, relu); the bias keeps PyTorch's default.
    pub fn with_init(
        vb: VarBuilder,
        in_channels: usize,
        out_channels: usize,
        kernel_size: usize,
        config: Conv2dConfig,
        weight_init: Init,
    ) -> Result<Self> {
        if config.groups == 0
            || !in_channels.is_multiple_of(config.groups)
            || !out_channels.is_multiple_of(config.groups)
        {
            return Err(flambeau_core::Error::invalid_argument(
                "groups",
                format!(
                    "Conv2d {}: in_channels ({in_channels}) and out_channels ({out_channels}) must be divisible by groups ({})",
                    vb.prefix(),
                    config.groups
                ),
            ));
        }
        let shape = (
            out_channels,
            in_channels / config.groups,
            kernel_size,
            kernel_size,
        );
        let weight = vb.param("weight", shape, weight_init)?;
        let fan_in = in_channels / config.groups * kernel_size * kernel_size;
        let bias = if config.bias {
            Some(vb.param("bias", out_channels, Init::pytorch_default_bias(fan_in))?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            config,
        })
    }

    /// Builds a layer from existing tensors (e.g. a replica on another device).
    pub fn from_tensors(weight: Tensor, bias: Option<Tensor>, config: Conv2dConfig) -> Self {
        Self {
            weight,
            bias,
            config,
        }
    }

    /// `[out, in/groups, k, k]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// `[out]`, when the layer has a bias.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// The configuration.
    pub fn config(&self) -> &Conv2dConfig {
        &self.config
    }
}

impl Module for Conv2d {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let c = &self.config;
        let ys =
            flambeau_kernels::conv2d(xs, &self.weight, c.stride, c.padding, c.dilation, c.groups)?;
        match &self.bias {
            Some(b) => ys.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?),
            None => Ok(ys),
        }
    }
}
