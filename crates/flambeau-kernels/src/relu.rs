//! ReLU and the residual `relu(a + b)` on the CPU (f32): one parallel pass each way.
//!
//! candle's `relu` is a single-threaded map, and its gradient builds a zero tensor, a
//! comparison, a dtype conversion and a product. Here the forward is one parallel pass and the
//! backward one masked copy (`dx = dy` where the output is positive, as PyTorch's
//! `threshold_backward`). The residual form also saves the intermediate sum.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::storage::contiguous_f32;
use crate::uninit::{assume_init, uninit};

const CHUNK: usize = 1 << 14;

fn fast(t: &Tensor) -> bool {
    crate::mode::fast_cpu(t) && t.dtype() == DType::F32
}

/// `max(x, 0)`, differentiable.
pub fn relu(x: &Tensor) -> candle_core::Result<Tensor> {
    if !fast(x) {
        return generic_relu(x);
    }
    x.contiguous()?.apply_op1(Relu)
}

/// `max(a + b, 0)` (a residual block's ending), differentiable in both.
pub fn add_relu(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    if !fast(a) || !fast(b) || a.shape() != b.shape() {
        return generic_relu(&(a + b)?);
    }
    a.contiguous()?.apply_op2(&b.contiguous()?, AddRelu)
}

/// ReLU from candle ops that exist on every device, with PyTorch's rules, which candle's own
/// `relu` breaks in its backward (it passes the gradient at `x = 0`): the gradient flows where
/// `x > 0` only, and NaN stays NaN (without a gradient).
fn generic_relu(x: &Tensor) -> candle_core::Result<Tensor> {
    let zeros = x.zeros_like()?;
    let positive = x.gt(&zeros)?.where_cond(x, &zeros)?;
    let nan = x.ne(x)?;
    positive + nan.where_cond(&x.detach(), &zeros)?
}

/// `max(v, 0)` with PyTorch's NaN rule: NaN stays NaN (`f32::max` would drop it).
#[inline(always)]
pub(crate) fn relu_of(v: f32) -> f32 {
    if v > 0.0 || v.is_nan() {
        v
    } else {
        0.0
    }
}

/// The gradient through a ReLU whose output was `y`: `dy` where `y > 0`, else 0 (PyTorch's
/// `threshold_backward`).
#[inline(always)]
pub(crate) fn relu_grad(y: f32, dy: f32) -> f32 {
    if y > 0.0 {
        dy
    } else {
        0.0
    }
}

fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    contiguous_f32(s, l, "relu")
}

/// `f` over `(a, b)` element pairs into a new vector, in parallel.
fn zip_map(
    a: &[f32],
    b: &[f32],
    f: impl Fn(f32, f32) -> f32 + Sync,
) -> candle_core::Result<Vec<f32>> {
    if a.len() != b.len() {
        candle_core::bail!("relu: operands of {} and {} elements", a.len(), b.len())
    }
    let mut out = uninit(a.len());
    out.par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
        .for_each(|(o, (a, b))| {
            for ((o, &x), &y) in o.iter_mut().zip(a).zip(b) {
                o.write(f(x, y));
            }
        });
    // SAFETY: the chunks cover every element.
    Ok(unsafe { assume_init(out) })
}

/// `dy` where `y > 0`, else 0.
pub(crate) fn masked_grad(y: &Tensor, dy: &Tensor) -> candle_core::Result<Tensor> {
    y.apply_op2_no_bwd(&dy.contiguous()?, &ReluBackward)
}

struct Relu;

impl CustomOp1 for Relu {
    fn name(&self) -> &'static str {
        "flambeau-relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = slice(s, l)?;
        let y = zip_map(x, x, |v, _| relu_of(v))?;
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(masked_grad(y, dy)?))
    }
}

struct AddRelu;

impl CustomOp2 for AddRelu {
    fn name(&self) -> &'static str {
        "flambeau-add-relu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let y = zip_map(slice(s1, l1)?, slice(s2, l2)?, |a, b| relu_of(a + b))?;
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _a: &Tensor,
        _b: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let g = masked_grad(y, dy)?;
        Ok((Some(g.clone()), Some(g)))
    }
}

/// `(y, dy) → dy·[y > 0]`.
struct ReluBackward;

impl CustomOp2 for ReluBackward {
    fn name(&self) -> &'static str {
        "flambeau-relu-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let dx = zip_map(slice(s1, l1)?, slice(s2, l2)?, relu_grad)?;
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}
