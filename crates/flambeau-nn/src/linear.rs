//! `nn.Linear`.

use candle_core::{Module, Tensor};

use flambeau_core::{Init, Result, VarBuilder};

/// `y = x Wᵀ + b` with `weight [out, in]` and `bias [out]`, initialised as PyTorch does.
#[derive(Debug, Clone)]
pub struct Linear {
    inner: candle_nn::Linear,
}

impl Linear {
    /// Registers `weight` (and `bias`) under `vb`.
    pub fn new(
        vb: VarBuilder,
        in_features: usize,
        out_features: usize,
        bias: bool,
    ) -> Result<Self> {
        let weight = vb.param(
            "weight",
            (out_features, in_features),
            Init::PYTORCH_DEFAULT_WEIGHT,
        )?;
        let bias = if bias {
            Some(vb.param(
                "bias",
                out_features,
                Init::pytorch_default_bias(in_features),
            )?)
        } else {
            None
        };
        Ok(Self {
            inner: candle_nn::Linear::new(weight, bias),
        })
    }

    /// `[out, in]`.
    pub fn weight(&self) -> &Tensor {
        self.inner.weight()
    }

    /// `[out]`, when the layer has a bias.
    pub fn bias(&self) -> Option<&Tensor> {
        self.inner.bias()
    }
}

impl Module for Linear {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        self.inner.forward(xs)
    }
}
