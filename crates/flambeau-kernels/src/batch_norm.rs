//! Fused 2-D batch normalisation on the CPU (f32, `[N, C, H, W]`).
//!
//! Built from candle's broadcast ops, batch norm costs about ten passes over the activation in
//! the forward and, through autograd, single-threaded strided reductions in the backward. Here
//! the forward reads the input once for the statistics and once to normalise, and the backward
//! reads `(x, dy)` once for the two channel sums and once to write `dx`. Work runs in parallel
//! over `(image, channel)` planes; channel sums are combined in a fixed order, so results do not
//! depend on the thread count's scheduling.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::relu::{relu_grad, relu_of};
use crate::storage::contiguous_f32;
use crate::uninit::{assume_init, uninit};

/// Whether [`batch_norm`] takes the fused path for this input (CPU, f32); other inputs use the
/// composed candle ops.
pub fn supported(x: &Tensor) -> bool {
    crate::mode::fast_cpu(x) && x.dtype() == DType::F32 && x.rank() == 4
}

/// Which statistics normalise the batch.
#[derive(Debug, Clone)]
pub enum Statistics {
    /// The batch's own (training, or no running statistics): computed here.
    Batch,
    /// Given per-channel mean and (biased) variance: the running statistics in eval mode.
    Running {
        /// Per-channel mean.
        mean: Vec<f64>,
        /// Per-channel variance.
        var: Vec<f64>,
    },
}

/// The per-channel statistics a forward pass used.
#[derive(Debug, Clone, Default)]
pub struct BatchStats {
    /// Mean of each channel.
    pub mean: Vec<f64>,
    /// Biased variance of each channel (divided by `N·H·W`).
    pub var: Vec<f64>,
}

/// What follows the normalisation inside the same op: no pass of its own over the activation,
/// forward or backward, and no extra node for autograd to accumulate a gradient into.
#[derive(Debug, Clone, Copy)]
pub enum Then<'a> {
    /// Nothing: `y = batch_norm(x)`.
    Nothing,
    /// `y = relu(batch_norm(x))`.
    Relu,
    /// `y = relu(batch_norm(x) + residual)`: a residual block's ending (also differentiable
    /// in `residual`).
    AddRelu(&'a Tensor),
}

/// `y = (x - mean) / sqrt(var + eps) * weight + bias` per channel, differentiable in `x`,
/// `weight` and `bias`. Returns `y` and the statistics used (for the running averages).
pub fn batch_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    stats: Statistics,
    eps: f64,
) -> candle_core::Result<(Tensor, BatchStats)> {
    batch_norm_then(x, weight, bias, stats, eps, Then::Nothing)
}

/// [`batch_norm`] followed by `then`, as one op.
pub fn batch_norm_then(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    stats: Statistics,
    eps: f64,
    then: Then,
) -> candle_core::Result<(Tensor, BatchStats)> {
    let (n, c, h, w) = x.dims4()?;
    let dims = Dims { n, c, hw: h * w };
    let saved = Arc::new(Mutex::new(Saved::default()));
    let op = BatchNormOp {
        dims,
        eps,
        stats,
        relu: !matches!(then, Then::Nothing),
        residual: matches!(then, Then::AddRelu(_)),
        saved: saved.clone(),
    };
    let (gamma, beta) = (
        weight.to_dtype(DType::F32)?.contiguous()?,
        bias.to_dtype(DType::F32)?.contiguous()?,
    );
    let x = x.contiguous()?;
    let y = match then {
        Then::AddRelu(residual) => {
            if residual.shape() != x.shape() {
                candle_core::bail!(
                    "batch_norm: residual {:?} does not match the input {:?}",
                    residual.dims(),
                    x.dims()
                )
            }
            // The op's third input is `[weight; bias]` (candle ops take at most three).
            let residual = residual.to_dtype(DType::F32)?.contiguous()?;
            x.apply_op3(&residual, &Tensor::cat(&[&gamma, &beta], 0)?, op)?
        }
        Then::Nothing | Then::Relu => x.apply_op3(&gamma, &beta, op)?,
    };
    let saved = saved.lock().expect("not poisoned");
    Ok((y, saved.stats.clone()))
}

#[derive(Debug, Clone, Copy)]
struct Dims {
    n: usize,
    c: usize,
    hw: usize,
}

impl Dims {
    /// Elements per channel.
    fn m(&self) -> usize {
        self.n * self.hw
    }

    /// Planes per parallel task: enough that small maps (1×1 in ResNet's last stage) do not
    /// turn into one task per element.
    fn planes_per_task(&self) -> usize {
        (4096 / self.hw.max(1)).max(1)
    }
}

/// What the forward leaves for the backward.
#[derive(Debug, Default)]
struct Saved {
    stats: BatchStats,
    inv_std: Vec<f64>,
}

struct BatchNormOp {
    dims: Dims,
    eps: f64,
    stats: Statistics,
    /// Whether a ReLU follows (fused).
    relu: bool,
    /// Whether a residual is added before the ReLU: the inputs are then
    /// `(x, residual, [weight; bias])` instead of `(x, weight, bias)`.
    residual: bool,
    saved: Arc<Mutex<Saved>>,
}

/// Per-plane partial sums of `f(index within plane)`, combined per channel in plane order.
fn channel_sums(
    d: Dims,
    plane_sums: impl Fn(usize) -> (f64, f64) + Sync + Send,
) -> (Vec<f64>, Vec<f64>) {
    let partial: Vec<(f64, f64)> = (0..d.n * d.c)
        .into_par_iter()
        .with_min_len(d.planes_per_task())
        .map(plane_sums)
        .collect();
    let (mut a, mut b) = (vec![0.0; d.c], vec![0.0; d.c]);
    for (i, (pa, pb)) in partial.into_iter().enumerate() {
        a[i % d.c] += pa;
        b[i % d.c] += pb;
    }
    (a, b)
}

/// Lanes of the f64 accumulators: independent chains the compiler keeps in four AVX2 vectors
/// (a single running sum would wait on the adder's latency at every element).
const LANES: usize = 16;

/// `(Σ f(i), Σ g(i))` over `0..len` in f64, lane by lane, lanes combined in order.
#[inline(always)]
fn two_sums(len: usize, f: impl Fn(usize) -> (f64, f64)) -> (f64, f64) {
    let (mut a, mut b) = ([0f64; LANES], [0f64; LANES]);
    let full = len / LANES * LANES;
    for base in (0..full).step_by(LANES) {
        for lane in 0..LANES {
            let (fa, fb) = f(base + lane);
            a[lane] += fa;
            b[lane] += fb;
        }
    }
    for i in full..len {
        let (fa, fb) = f(i);
        a[i - full] += fa;
        b[i - full] += fb;
    }
    (a.iter().sum(), b.iter().sum())
}

/// Batch mean and biased variance per channel (sums in f64: one pass, no cancellation trouble
/// for f32 inputs).
fn batch_statistics(d: Dims, x: &[f32]) -> BatchStats {
    let (sum, sum_sq) = channel_sums(d, |i| {
        let plane = &x[i * d.hw..(i + 1) * d.hw];
        two_sums(plane.len(), |j| {
            let v = plane[j] as f64;
            (v, v * v)
        })
    });
    let m = d.m() as f64;
    let mean: Vec<f64> = sum.iter().map(|s| s / m).collect();
    let var = sum_sq
        .iter()
        .zip(&mean)
        .map(|(q, mu)| (q / m - mu * mu).max(0.0))
        .collect();
    BatchStats { mean, var }
}

impl CustomOp3 for BatchNormOp {
    fn name(&self) -> &'static str {
        "flambeau-batch-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = self.dims;
        let x = contiguous_f32(s1, l1, "batch_norm input")?;
        let (gamma, beta, residual) = if self.residual {
            let gb = contiguous_f32(s3, l3, "batch_norm weight and bias")?;
            let residual = contiguous_f32(s2, l2, "batch_norm residual")?;
            if gb.len() != 2 * d.c || residual.len() != x.len() {
                candle_core::bail!("batch_norm: residual or weight and bias of the wrong size")
            }
            (&gb[..d.c], &gb[d.c..], Some(residual))
        } else {
            let gamma = contiguous_f32(s2, l2, "batch_norm weight")?;
            (gamma, contiguous_f32(s3, l3, "batch_norm bias")?, None)
        };
        if gamma.len() != d.c || beta.len() != d.c {
            candle_core::bail!("batch_norm: weight and bias must have {} elements", d.c)
        }
        let stats = match &self.stats {
            Statistics::Batch => batch_statistics(d, x),
            Statistics::Running { mean, var } => BatchStats {
                mean: mean.clone(),
                var: var.clone(),
            },
        };
        let inv_std: Vec<f64> = stats
            .var
            .iter()
            .map(|v| 1.0 / (v + self.eps).sqrt())
            .collect();
        // y = x * scale + shift, per channel.
        let scale: Vec<f32> = (0..d.c)
            .map(|c| (gamma[c] as f64 * inv_std[c]) as f32)
            .collect();
        let shift: Vec<f32> = (0..d.c)
            .map(|c| (beta[c] as f64 - stats.mean[c] * gamma[c] as f64 * inv_std[c]) as f32)
            .collect();
        let mut y = uninit(x.len());
        let relu = self.relu;
        y.par_chunks_mut(d.hw.max(1))
            .zip(x.par_chunks(d.hw.max(1)))
            .with_min_len(d.planes_per_task())
            .enumerate()
            .for_each(|(i, (yp, xp))| {
                let (a, b) = (scale[i % d.c], shift[i % d.c]);
                if let Some(residual) = residual {
                    let rp = &residual[i * d.hw..][..xp.len()];
                    for ((o, &v), &r) in yp.iter_mut().zip(xp).zip(rp) {
                        // The unfused order: normalise, round, then add.
                        o.write(relu_of((v * a + b) + r));
                    }
                } else if relu {
                    for (o, &v) in yp.iter_mut().zip(xp) {
                        o.write(relu_of(v * a + b));
                    }
                } else {
                    for (o, &v) in yp.iter_mut().zip(xp) {
                        o.write(v * a + b);
                    }
                }
            });
        // SAFETY: every plane written.
        let y = unsafe { assume_init(y) };
        *self.saved.lock().expect("not poisoned") = Saved { stats, inv_std };
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        second: &Tensor,
        third: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // `(x, weight, bias)`, or `(x, residual, [weight; bias])`.
        let weight = if self.residual {
            third.narrow(0, 0, self.dims.c)?
        } else {
            second.clone()
        };
        let grad = grad.to_dtype(DType::F32)?.contiguous()?;
        let saved = self.saved.lock().expect("not poisoned");
        let sums = Arc::new(Mutex::new((Vec::new(), Vec::new())));
        let op = BatchNormBackward {
            dims: self.dims,
            mean: saved.stats.mean.clone(),
            inv_std: saved.inv_std.clone(),
            gamma: weight.to_dtype(DType::F32)?.to_vec1()?,
            batch_stats: matches!(self.stats, Statistics::Batch),
            relu: self.relu,
            sums: sums.clone(),
        };
        let dx = x.apply_op3_no_bwd(&grad, res, &op)?;
        let (dgamma, dbeta) = sums.lock().expect("not poisoned").clone();
        let to_tensor = |v: Vec<f64>| -> candle_core::Result<Tensor> {
            let v: Vec<f32> = v.into_iter().map(|x| x as f32).collect();
            Tensor::from_vec(v, self.dims.c, x.device())?.to_dtype(weight.dtype())
        };
        let (dgamma, dbeta) = (to_tensor(dgamma)?, to_tensor(dbeta)?);
        if self.residual {
            // The residual's gradient is the ReLU's: `dy` where `y > 0`.
            let dresidual = crate::relu::masked_grad(res, &grad)?;
            let dgamma_beta = Tensor::cat(&[&dgamma, &dbeta], 0)?;
            return Ok((Some(dx), Some(dresidual), Some(dgamma_beta)));
        }
        Ok((Some(dx), Some(dgamma), Some(dbeta)))
    }
}

/// `(x, dy, y) → dx`; leaves `(dweight, dbias)` in `sums`. `y`, the forward's output, is
/// read only with a fused ReLU: the gradient passes where `y > 0`.
struct BatchNormBackward {
    dims: Dims,
    mean: Vec<f64>,
    inv_std: Vec<f64>,
    gamma: Vec<f32>,
    /// Whether the statistics came from the batch (then they depend on `x` too).
    batch_stats: bool,
    relu: bool,
    sums: Arc<Mutex<(Vec<f64>, Vec<f64>)>>,
}

/// The gradient reaching the normalisation: `dy`, or with a fused ReLU `dy` where `y > 0`.
#[inline(always)]
fn gated(relu: bool, g: f32, y: f32) -> f32 {
    if relu {
        relu_grad(y, g)
    } else {
        g
    }
}

impl CustomOp3 for BatchNormBackward {
    fn name(&self) -> &'static str {
        "flambeau-batch-norm-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = self.dims;
        let hw = d.hw.max(1);
        let x = contiguous_f32(s1, l1, "batch_norm input")?;
        let dy = contiguous_f32(s2, l2, "batch_norm gradient")?;
        let y = contiguous_f32(s3, l3, "batch_norm output")?;
        if dy.len() != x.len() || y.len() != x.len() {
            candle_core::bail!("batch_norm backward: input, gradient and output sizes differ")
        }
        let relu = self.relu;
        // Σ dy and Σ dy·(x - mean) per channel.
        let (sum_dy, sum_dy_xmu) = channel_sums(d, |i| {
            let mu = self.mean[i % d.c];
            let plane = i * d.hw..(i + 1) * d.hw;
            let (xp, gp, yp) = (&x[plane.clone()], &dy[plane.clone()], &y[plane]);
            two_sums(xp.len(), |j| {
                let g = gated(relu, gp[j], yp[j]) as f64;
                (g, g * (xp[j] as f64 - mu))
            })
        });
        let m = d.m() as f64;
        let c = d.c;
        // dx = k·dy - a - b·(x - mean) with per-channel k, a, b (PyTorch's form; the
        // batch-statistics terms a and b only when the statistics came from the batch).
        let mut k = vec![0f32; c];
        let mut a = vec![0f32; c];
        let mut b = vec![0f32; c];
        let mu: Vec<f32> = self.mean.iter().map(|&v| v as f32).collect();
        for ch in 0..c {
            let scale = self.gamma[ch] as f64 * self.inv_std[ch];
            k[ch] = scale as f32;
            if self.batch_stats {
                let proj = sum_dy_xmu[ch] / m * self.inv_std[ch] * self.inv_std[ch];
                b[ch] = (scale * proj) as f32;
                a[ch] = (scale * sum_dy[ch] / m) as f32;
            }
        }
        let mut dx = uninit(x.len());
        dx.par_chunks_mut(hw)
            .zip(
                x.par_chunks(hw)
                    .zip(dy.par_chunks(hw).zip(y.par_chunks(hw))),
            )
            .with_min_len(d.planes_per_task())
            .enumerate()
            .for_each(|(i, (dxp, (xp, (gp, yp))))| {
                let ch = i % c;
                let (k, a, b, mu) = (k[ch], a[ch], b[ch], mu[ch]);
                for ((o, &xv), (&g, &yv)) in dxp.iter_mut().zip(xp).zip(gp.iter().zip(yp)) {
                    o.write(k * gated(relu, g, yv) - a - b * (xv - mu));
                }
            });
        // SAFETY: every plane written.
        let dx = unsafe { assume_init(dx) };
        let dgamma = (0..c).map(|ch| sum_dy_xmu[ch] * self.inv_std[ch]).collect();
        *self.sums.lock().expect("not poisoned") = (dgamma, sum_dy);
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}
