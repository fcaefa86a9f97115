//! Losses with PyTorch's definitions.

use candle_core::{DType, Tensor, D};

/// How per-sample losses are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reduction {
    /// Mean over the non-ignored samples (PyTorch's default).
    #[default]
    Mean,
    /// Sum over samples.
    Sum,
    /// One loss per sample (ignored samples give 0).
    None,
}

/// Options of [`cross_entropy`], PyTorch's defaults by `Default`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CrossEntropyOptions {
    /// ε of label smoothing: the target becomes `(1-ε)·one_hot + ε/C`.
    pub label_smoothing: f64,
    /// Targets equal to this contribute nothing (PyTorch's default: -100).
    pub ignore_index: Option<i64>,
    /// How per-sample losses are combined.
    pub reduction: Reduction,
}

impl Default for CrossEntropyOptions {
    fn default() -> Self {
        Self {
            label_smoothing: 0.0,
            ignore_index: Some(-100),
            reduction: Reduction::Mean,
        }
    }
}

/// `F.cross_entropy(logits, targets, ...)` for logits `[N, C]` and class indices `[N]`
/// (u8/u32/i64). With label smoothing ε the loss is `(1-ε)·nll + ε/C · Σ_c -log p_c`, ignored
/// samples excluded from both terms and from the mean's count, exactly as PyTorch computes it.
pub fn cross_entropy(
    logits: &Tensor,
    targets: &Tensor,
    opts: &CrossEntropyOptions,
) -> candle_core::Result<Tensor> {
    let (n, classes) = logits.dims2()?;
    if targets.dims() != [n] {
        candle_core::bail!(
            "cross_entropy: targets must have shape [{n}], got {:?}",
            targets.dims()
        )
    }
    if !(0.0..=1.0).contains(&opts.label_smoothing) {
        candle_core::bail!(
            "cross_entropy: label_smoothing must be in [0, 1], got {}",
            opts.label_smoothing
        )
    }
    let log_p = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let t = targets.to_dtype(DType::I64)?;
    let valid = match opts.ignore_index {
        Some(ignore) => t.ne(ignore)?,
        None => t.ones_like()?.to_dtype(DType::U8)?,
    };
    let in_range = t.ge(0i64)?.mul(&t.lt(classes as i64)?)?;
    // On the CPU an out-of-range target is an error, as in PyTorch. Elsewhere reading the targets
    // back would stall the device every step: the sample's loss becomes NaN instead (PyTorch's
    // CUDA kernel asserts asynchronously), which the training loop's finite checks report.
    let out_of_range = valid.mul(&in_range.ones_like()?.sub(&in_range)?)?;
    if n > 0 && targets.device().is_cpu() && out_of_range.max(0)?.to_scalar::<u8>()? == 1 {
        let bad: Vec<i64> = t.to_vec1()?;
        let flags: Vec<u8> = out_of_range.to_vec1()?;
        let target = bad
            .iter()
            .zip(&flags)
            .find(|(_, &f)| f == 1)
            .map_or(0, |(t, _)| *t);
        candle_core::bail!("cross_entropy: target {target} is out of bounds for {classes} classes")
    }
    let safe_t = valid.mul(&in_range)?.where_cond(&t, &t.zeros_like()?)?;
    let valid_f = valid.to_dtype(logits.dtype())?;
    let picked = log_p.gather(&safe_t.unsqueeze(1)?, 1)?.squeeze(1)?;
    let mut per_sample = (picked.neg()? * &valid_f)?;
    if opts.label_smoothing > 0.0 {
        let eps = opts.label_smoothing;
        let smooth = (log_p.sum(D::Minus1)?.neg()? * &valid_f)?;
        per_sample = ((per_sample * (1.0 - eps))? + (smooth * (eps / classes as f64))?)?;
    }
    if !targets.device().is_cpu() {
        let nan = per_sample.ones_like()?.affine(f64::NAN, 0.0)?;
        per_sample = out_of_range.where_cond(&nan, &per_sample)?;
    }
    match opts.reduction {
        Reduction::None => Ok(per_sample),
        Reduction::Sum => per_sample.sum_all(),
        Reduction::Mean => per_sample.sum_all()?.broadcast_div(&valid_f.sum_all()?),
    }
}

/// Fraction of rows whose arg-max equals the target. Reads the count back to the host: in a
/// training loop, sum [`correct_predictions`] on the device instead and read once.
pub fn accuracy(logits: &Tensor, targets: &Tensor) -> candle_core::Result<f64> {
    let n = logits.dim(0)?;
    if n == 0 {
        return Ok(0.0);
    }
    let correct = correct_predictions(logits, targets)?.to_scalar::<f64>()?;
    Ok(correct / n as f64)
}

/// The number of rows whose arg-max equals the target, as an f64 scalar on the logits' device
/// (nothing is read back, so the device is not waited for). Logits of shape `[n, classes]`,
/// targets `[n]` of an integer dtype.
pub fn correct_predictions(logits: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
    let logits = logits.detach();
    if logits.dim(0)? == 0 {
        return Tensor::zeros((), DType::F64, logits.device());
    }
    let pred = logits.argmax(D::Minus1)?.to_dtype(DType::I64)?;
    pred.eq(&targets.to_dtype(DType::I64)?)?
        .to_dtype(DType::F64)?
        .sum_all()
}
