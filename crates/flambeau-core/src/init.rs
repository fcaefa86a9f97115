//! Parameter initialisations with PyTorch's formulas (`torch.nn.init`).

use candle_core::{DType, Device, Shape, Tensor};
use rand::Rng;
use rand_distr::{Distribution, Normal};

use crate::Result;

/// Which fan `kaiming_*` scales by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FanMode {
    /// `mode='fan_in'` (PyTorch's default; preserves forward variance)
    FanIn,
    /// `mode='fan_out'` (torchvision's ResNet convolutions; preserves backward variance)
    FanOut,
}

/// The non-linearity whose gain `kaiming_*` uses (`torch.nn.init.calculate_gain`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Nonlinearity {
    /// gain √2
    Relu,
    /// gain √(2 / (1 + a²)) with the given negative slope `a`
    LeakyRelu(f64),
    /// gain 1
    Linear,
}

impl Nonlinearity {
    /// `torch.nn.init.calculate_gain`.
    pub fn gain(self) -> f64 {
        match self {
            Nonlinearity::Relu => 2f64.sqrt(),
            Nonlinearity::LeakyRelu(a) => (2.0 / (1.0 + a * a)).sqrt(),
            Nonlinearity::Linear => 1.0,
        }
    }
}

/// How a new parameter or buffer is filled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// Every element the same (`ones_`, `zeros_`, `constant_`).
    Const(f64),
    /// U(lo, hi) (`uniform_`).
    Uniform {
        /// lower bound
        lo: f64,
        /// upper bound
        hi: f64,
    },
    /// N(mean, std²) (`normal_`).
    Normal {
        /// mean
        mean: f64,
        /// standard deviation
        std: f64,
    },
    /// `kaiming_uniform_`: U(±gain·√(3/fan)). PyTorch's Conv2d/Linear default is
    /// `KaimingUniform { mode: FanIn, nonlinearity: LeakyRelu(√5) }`.
    KaimingUniform {
        /// fan_in or fan_out
        mode: FanMode,
        /// the gain's non-linearity
        nonlinearity: Nonlinearity,
    },
    /// `kaiming_normal_`: N(0, (gain/√fan)²). torchvision's ResNet uses
    /// `KaimingNormal { mode: FanOut, nonlinearity: Relu }` for every convolution.
    KaimingNormal {
        /// fan_in or fan_out
        mode: FanMode,
        /// the gain's non-linearity
        nonlinearity: Nonlinearity,
    },
}

impl Init {
    /// PyTorch's default for Conv2d and Linear weights (`kaiming_uniform_(w, a=math.sqrt(5))`).
    pub const PYTORCH_DEFAULT_WEIGHT: Init = Init::KaimingUniform {
        mode: FanMode::FanIn,
        nonlinearity: Nonlinearity::LeakyRelu(2.236_067_977_499_79),
    };

    /// PyTorch's default bias for Conv2d and Linear: U(±1/√fan_in) with the weight's fan_in.
    pub fn pytorch_default_bias(fan_in: usize) -> Init {
        let bound = if fan_in > 0 {
            1.0 / (fan_in as f64).sqrt()
        } else {
            0.0
        };
        Init::Uniform {
            lo: -bound,
            hi: bound,
        }
    }

    /// Fills a new tensor of `shape` on `device` with `dtype`, drawing from `rng`.
    pub fn tensor<R: Rng + ?Sized>(
        &self,
        shape: &Shape,
        dtype: DType,
        device: &Device,
        rng: &mut R,
    ) -> Result<Tensor> {
        let n = shape.elem_count();
        let values: Vec<f64> = match *self {
            Init::Const(c) => return Ok(Tensor::full(c, shape, device)?.to_dtype(dtype)?),
            Init::Uniform { lo, hi } => uniform(n, lo, hi, rng),
            Init::Normal { mean, std } => normal(n, mean, std, rng),
            Init::KaimingUniform { mode, nonlinearity } => {
                let bound = nonlinearity.gain() * (3.0 / fan(shape, mode) as f64).sqrt();
                uniform(n, -bound, bound, rng)
            }
            Init::KaimingNormal { mode, nonlinearity } => {
                let std = nonlinearity.gain() / (fan(shape, mode) as f64).sqrt();
                normal(n, 0.0, std, rng)
            }
        };
        Ok(Tensor::from_vec(values, shape, &Device::Cpu)?
            .to_dtype(dtype)?
            .to_device(device)?)
    }
}

/// `torch.nn.init._calculate_fan_in_and_fan_out`: dim 1 (resp. 0) times the receptive field.
/// Shapes of rank < 2 have no fan in PyTorch (it raises); we use the element count, never 0.
pub fn fan(shape: &Shape, mode: FanMode) -> usize {
    let dims = shape.dims();
    let f = if dims.len() < 2 {
        shape.elem_count()
    } else {
        let receptive: usize = dims[2..].iter().product();
        match mode {
            FanMode::FanIn => dims[1] * receptive,
            FanMode::FanOut => dims[0] * receptive,
        }
    };
    f.max(1)
}

fn uniform<R: Rng + ?Sized>(n: usize, lo: f64, hi: f64, rng: &mut R) -> Vec<f64> {
    (0..n)
        .map(|_| lo + (hi - lo) * rng.random::<f64>())
        .collect()
}

fn normal<R: Rng + ?Sized>(n: usize, mean: f64, std: f64, rng: &mut R) -> Vec<f64> {
    match Normal::new(mean, std) {
        Ok(dist) => (0..n).map(|_| dist.sample(rng)).collect(),
        // std == 0 or NaN: PyTorch would fill with the mean.
        Err(_) => vec![mean; n],
    }
}
