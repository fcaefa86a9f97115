//! `nn.BatchNorm2d`.

use candle_core::{DType, ModuleT, Tensor, Var, D};

use flambeau_core::{Init, Result, VarBuilder};
use flambeau_kernels as ops;
use flambeau_kernels::batch_norm::{Statistics, Then};

/// Hyper-parameters of [`BatchNorm2d`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchNormConfig {
    /// Added to the variance for numerical stability.
    pub eps: f64,
    /// Running-average factor; `None` is PyTorch's cumulative moving average
    /// (factor `1 / num_batches_tracked`).
    pub momentum: Option<f64>,
    /// Learnable `weight` and `bias`.
    pub affine: bool,
    /// Keep `running_mean`, `running_var` and `num_batches_tracked` (used in eval). Without
    /// them the layer normalises with batch statistics in eval too.
    pub track_running_stats: bool,
}

impl Default for BatchNormConfig {
    fn default() -> Self {
        Self {
            eps: 1e-5,
            momentum: Some(0.1),
            affine: true,
            track_running_stats: true,
        }
    }
}

#[derive(Debug, Clone)]
struct RunningStats {
    mean: Var,
    var: Var,
    num_batches_tracked: Var,
}

/// Batch normalisation over `[N, C, H, W]` with PyTorch's semantics: biased variance to
/// normalise, unbiased variance in the running average, `num_batches_tracked` counted.
#[derive(Debug, Clone)]
pub struct BatchNorm2d {
    weight: Option<Tensor>,
    bias: Option<Tensor>,
    running: Option<RunningStats>,
    num_features: usize,
    config: BatchNormConfig,
}

impl BatchNorm2d {
    /// Registers `weight`, `bias`, `running_mean`, `running_var`, `num_batches_tracked` (as
    /// configured) under `vb`, with module version 2 as PyTorch records it.
    pub fn new(vb: VarBuilder, num_features: usize, config: BatchNormConfig) -> Result<Self> {
        vb.set_module_version(2)?;
        let (weight, bias) = if config.affine {
            (
                Some(vb.param("weight", num_features, Init::Const(1.0))?),
                Some(vb.param("bias", num_features, Init::Const(0.0))?),
            )
        } else {
            (None, None)
        };
        let running = if config.track_running_stats {
            let dev = vb.device().clone();
            let dt = vb.dtype();
            Some(RunningStats {
                mean: vb.buffer("running_mean", Tensor::zeros(num_features, dt, &dev)?, true)?,
                var: vb.buffer("running_var", Tensor::ones(num_features, dt, &dev)?, true)?,
                num_batches_tracked: vb.buffer(
                    "num_batches_tracked",
                    Tensor::new(0i64, &dev)?,
                    true,
                )?,
            })
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            running,
            num_features,
            config,
        })
    }

    /// The affine scale, when `affine`.
    pub fn weight(&self) -> Option<&Tensor> {
        self.weight.as_ref()
    }

    /// The affine shift, when `affine`.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// `running_mean`, when tracked.
    pub fn running_mean(&self) -> Option<&Tensor> {
        self.running.as_ref().map(|r| r.mean.as_tensor())
    }

    /// `running_var`, when tracked.
    pub fn running_var(&self) -> Option<&Tensor> {
        self.running.as_ref().map(|r| r.var.as_tensor())
    }

    /// `num_batches_tracked`, when tracked.
    pub fn num_batches_tracked(&self) -> Option<&Tensor> {
        self.running
            .as_ref()
            .map(|r| r.num_batches_tracked.as_tensor())
    }

    /// The shape, and in training PyTorch's `_verify_batch_size`: with one value per channel
    /// the batch variance is 0 and the unbiased running variance divides by zero (NaN).
    fn check_input(&self, xs: &Tensor, train: bool) -> candle_core::Result<()> {
        if xs.rank() != 4 || xs.dim(1)? != self.num_features {
            candle_core::bail!(
                "BatchNorm2d({}) expects [N, {}, H, W], got {:?}",
                self.num_features,
                self.num_features,
                xs.dims()
            )
        }
        let (n, _, h, w) = xs.dims4()?;
        if train && n * h * w == 1 {
            candle_core::bail!(
                "Expected more than 1 value per channel when training, got input size {:?}; \
                 use batches of at least 2 samples (e.g. drop the last incomplete batch) or \
                 evaluate the layer with train=false",
                xs.dims()
            )
        }
        Ok(())
    }

    /// Updates the running statistics from one training batch (no gradient flows here).
    fn update_running(
        &self,
        running: &RunningStats,
        mean: &Tensor,
        biased_var: &Tensor,
        n: usize,
    ) -> candle_core::Result<()> {
        let count = running.num_batches_tracked.as_tensor().affine(1.0, 1.0)?;
        running.num_batches_tracked.set(&count)?;
        let factor = match self.config.momentum {
            Some(m) => m,
            None => 1.0 / count.to_scalar::<i64>()? as f64,
        };
        // n ≥ 2: `check_input` refuses one value per channel in training.
        let unbiased = biased_var.affine(n as f64 / (n as f64 - 1.0), 0.0)?;
        let dt = running.mean.dtype();
        let new_mean = ((running.mean.as_tensor() * (1.0 - factor))?
            + (mean.detach().to_dtype(dt)? * factor)?)?;
        let new_var = ((running.var.as_tensor() * (1.0 - factor))?
            + (unbiased.detach().to_dtype(dt)? * factor)?)?;
        running.mean.set(&new_mean)?;
        running.var.set(&new_var)
    }
}

impl BatchNorm2d {
    /// `relu(self.forward_t(xs, train))`; on the CPU in f32 one fused op, forward and backward.
    pub fn forward_relu_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        if ops::batch_norm::supported(xs) {
            self.check_input(xs, train)?;
            return self.forward_fused(xs, train, Then::Relu);
        }
        ops::relu::relu(&self.forward_t(xs, train)?)
    }

    /// `relu(self.forward_t(xs, train) + residual)`, a residual block's ending; on the CPU in
    /// f32 one fused op, forward and backward.
    pub fn forward_add_relu_t(
        &self,
        xs: &Tensor,
        residual: &Tensor,
        train: bool,
    ) -> candle_core::Result<Tensor> {
        if ops::batch_norm::supported(xs) && residual.dtype() == xs.dtype() {
            self.check_input(xs, train)?;
            return self.forward_fused(xs, train, Then::AddRelu(residual));
        }
        ops::relu::add_relu(&self.forward_t(xs, train)?, residual)
    }

    /// The CPU f32 path: one fused op (see [`ops::batch_norm`]) with what follows it.
    fn forward_fused(&self, xs: &Tensor, train: bool, then: Then) -> candle_core::Result<Tensor> {
        let use_batch_stats = train || self.running.is_none();
        let stats = match (&self.running, use_batch_stats) {
            (Some(r), false) => Statistics::Running {
                mean: to_f64s(r.mean.as_tensor())?,
                var: to_f64s(r.var.as_tensor())?,
            },
            _ => Statistics::Batch,
        };
        let (weight, bias) = match (&self.weight, &self.bias) {
            (Some(w), Some(b)) => (w.clone(), b.clone()),
            _ => {
                let ones = Tensor::ones(self.num_features, DType::F32, xs.device())?;
                (ones.clone(), ones.zeros_like()?)
            }
        };
        let (y, used) =
            ops::batch_norm::batch_norm_then(xs, &weight, &bias, stats, self.config.eps, then)?;
        if let (true, true, Some(running)) = (train, use_batch_stats, &self.running) {
            let dev = xs.device();
            let as_tensor = |v: Vec<f64>| Tensor::from_vec(v, self.num_features, dev);
            let (n, _, h, w) = xs.dims4()?;
            self.update_running(
                running,
                &as_tensor(used.mean)?,
                &as_tensor(used.var)?,
                n * h * w,
            )?;
        }
        Ok(y)
    }
}

fn to_f64s(t: &Tensor) -> candle_core::Result<Vec<f64>> {
    t.to_dtype(DType::F64)?.to_vec1()
}

/// `[C]` → `[1, C, 1, 1]` for broadcasting over `[N, C, H, W]`.
fn per_channel(t: &Tensor) -> candle_core::Result<Tensor> {
    t.reshape((1, t.elem_count(), 1, 1))
}

impl ModuleT for BatchNorm2d {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.check_input(xs, train)?;
        if ops::batch_norm::supported(xs) {
            return self.forward_fused(xs, train, Then::Nothing);
        }
        let use_batch_stats = train || self.running.is_none();
        let (mean, var) = if use_batch_stats {
            let (n, c, h, w) = xs.dims4()?;
            // Statistics in f32 at least, so f16/bf16 models keep their precision.
            let compute = if xs.dtype() == DType::F64 {
                DType::F64
            } else {
                DType::F32
            };
            let x = xs.to_dtype(compute)?;
            let flat = x.transpose(0, 1)?.reshape((c, n * h * w))?;
            let mean = flat.mean(D::Minus1)?;
            let centered = flat.broadcast_sub(&mean.unsqueeze(1)?)?;
            let var = centered.sqr()?.mean(D::Minus1)?;
            if train {
                if let Some(running) = &self.running {
                    self.update_running(running, &mean, &var, n * h * w)?;
                }
            }
            (mean.to_dtype(xs.dtype())?, var.to_dtype(xs.dtype())?)
        } else {
            let r = self.running.as_ref().expect("checked above");
            (r.mean.as_tensor().clone(), r.var.as_tensor().clone())
        };
        let inv_std = (var + self.config.eps)?.sqrt()?.recip()?;
        let xhat = xs
            .broadcast_sub(&per_channel(&mean)?)?
            .broadcast_mul(&per_channel(&inv_std)?)?;
        match (&self.weight, &self.bias) {
            (Some(w), Some(b)) => xhat
                .broadcast_mul(&per_channel(w)?)?
                .broadcast_add(&per_channel(b)?),
            _ => Ok(xhat),
        }
    }
}
