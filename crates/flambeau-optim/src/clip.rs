//! Gradient clipping: `torch.nn.utils.clip_grad_norm_` and `clip_grad_value_`.

use candle_core::backprop::GradStore;
use candle_core::{DType, Var};

use crate::validate;
use flambeau_core::{Error, Result};

/// Scales the gradients of `params` so that their global `norm_type`-norm is at most
/// `max_norm` (PyTorch's `clip_coef = max_norm / (total_norm + 1e-6)`, clamped to 1), and
/// returns the total norm before clipping. `norm_type` is 2.0, any p ≥ 1, or `f64::INFINITY`;
/// `max_norm` a finite number ≥ 0 (a NaN would turn every gradient into NaN).
pub fn clip_grad_norm(
    grads: &mut GradStore,
    params: &[Var],
    max_norm: f64,
    norm_type: f64,
) -> Result<f64> {
    validate::non_negative("max_norm", "Invalid max_norm value", max_norm)?;
    if norm_type.is_nan() || norm_type < 1.0 && norm_type.is_finite() {
        return Err(Error::invalid_argument(
            "norm_type",
            format!(
                "clip_grad_norm: unsupported norm_type {}; expected a number >= 1 or inf",
                validate::py_float(norm_type)
            ),
        ));
    }
    let present: Vec<&Var> = params
        .iter()
        .filter(|p| grads.get(p.as_tensor()).is_some())
        .collect();
    if present.is_empty() {
        return Ok(0.0);
    }
    let mut norms = Vec::with_capacity(present.len());
    for p in &present {
        let g = grads
            .get(p.as_tensor())
            .expect("filtered")
            .to_dtype(DType::F32)?;
        let n = if norm_type.is_infinite() {
            g.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()? as f64
        } else {
            let s = g.abs()?.powf(norm_type)?.sum_all()?.to_scalar::<f32>()? as f64;
            s.powf(1.0 / norm_type)
        };
        norms.push(n);
    }
    let total = if norm_type.is_infinite() {
        norms.iter().cloned().fold(0.0, f64::max)
    } else {
        // PyTorch takes the norm of the per-tensor norms (in f32).
        (norms
            .iter()
            .map(|n| (*n as f32).powf(norm_type as f32))
            .sum::<f32>() as f64)
            .powf(1.0 / norm_type)
    };
    let clip_coef = (max_norm / (total + 1e-6)).min(1.0);
    for p in present {
        let g = grads.get(p.as_tensor()).expect("filtered");
        let scaled = g.affine(clip_coef, 0.0)?;
        grads.insert(p.as_tensor(), scaled);
    }
    Ok(total)
}

/// Clamps every gradient of `params` into `[-clip_value, clip_value]`; `clip_value` is a finite
/// number ≥ 0.
pub fn clip_grad_value(grads: &mut GradStore, params: &[Var], clip_value: f64) -> Result<()> {
    validate::non_negative("clip_value", "Invalid clip_value", clip_value)?;
    for p in params {
        if let Some(g) = grads.get(p.as_tensor()) {
            let clamped = g.clamp(-clip_value, clip_value)?;
            grads.insert(p.as_tensor(), clamped);
        }
    }
    Ok(())
}
