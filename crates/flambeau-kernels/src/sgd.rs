//! The SGD update of one CPU f32 parameter in two parallel in-place passes (momentum buffer,
//! then parameter) instead of a chain of candle ops, several of them single-threaded. Every element
//! goes through the same f32 operations, in the same order, as the composed path (candle's
//! `affine(a, 0)` is `x * a + 0`), so results are bit-identical.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp3, DType, InplaceOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::storage::contiguous_f32;

/// One parameter group's hyper-parameters, as f32 (what candle's `affine` uses too).
#[derive(Debug, Clone, Copy)]
pub struct Hyper {
    pub lr: f32,
    pub momentum: f32,
    /// `1 - dampening`, rounded from f64 as the composed path's `affine(1 - dampening, 0)`.
    pub one_minus_dampening: f32,
    pub weight_decay: f32,
    pub nesterov: bool,
    pub maximize: bool,
}

/// Whether the fused path applies.
pub fn supported(param: &Tensor, grad: &Tensor) -> bool {
    crate::mode::fast_cpu(param)
        && param.dtype() == DType::F32
        && grad.dtype() == DType::F32
        && param.shape() == grad.shape()
}

/// The momentum buffer after this step. On the first step (`old` is `None`) it is a new
/// tensor, the gradient (as in PyTorch); afterwards `old` is updated in place, so it must not
/// share its storage with anything the caller wants to keep (the optimizer copies buffers it
/// hands out or takes in).
pub fn momentum_buffer(
    h: Hyper,
    param: &Tensor,
    grad: &Tensor,
    old: Option<Tensor>,
) -> candle_core::Result<Tensor> {
    let (param, grad) = (param.contiguous()?, grad.contiguous()?);
    match old {
        Some(b) if b.is_contiguous() => {
            b.inplace_op3(
                &param,
                &grad,
                &InPlace {
                    h,
                    target: Target::Momentum,
                },
            )?;
            Ok(b)
        }
        Some(b) => param.apply_op3_no_bwd(&grad, &b.contiguous()?, &Update { h, first: false }),
        None => param.apply_op3_no_bwd(&grad, &param, &Update { h, first: true }),
    }
}

/// Updates the parameter in place, given the new momentum buffer (ignored without momentum):
/// one pass over memory, where a new tensor plus `Var::set` would be three.
pub fn update_param(
    h: Hyper,
    param: &Tensor,
    grad: &Tensor,
    buffer: &Tensor,
) -> candle_core::Result<()> {
    if !param.is_contiguous() {
        candle_core::bail!("sgd: the parameter is not contiguous")
    }
    param.inplace_op3(
        &grad.contiguous()?,
        &buffer.contiguous()?,
        &InPlace {
            h,
            target: Target::Param,
        },
    )
}

struct Update {
    h: Hyper,
    first: bool,
}

fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    contiguous_f32(s, l, "sgd")
}

const CHUNK: usize = 1 << 14;

/// Calls `kernel` with `direction(g, p)`: the gradient after `maximize` and weight decay, the
/// case chosen outside the loops so that each one vectorises.
macro_rules! with_direction {
    ($h:expr, $kernel:ident($($arg:expr),*)) => {
        match ($h.maximize, $h.weight_decay != 0.0) {
            (false, false) => $kernel($($arg,)* |g: f32, _p: f32| g),
            (false, true) => $kernel($($arg,)* |g: f32, p: f32| g + (p * $h.weight_decay + 0.0)),
            (true, false) => $kernel($($arg,)* |g: f32, _p: f32| -g),
            (true, true) => $kernel($($arg,)* |g: f32, p: f32| -g + (p * $h.weight_decay + 0.0)),
        }
    };
}

impl CustomOp3 for Update {
    fn name(&self) -> &'static str {
        "flambeau-sgd-momentum"
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
        let (p, g, b) = (slice(s1, l1)?, slice(s2, l2)?, slice(s3, l3)?);
        if p.len() != g.len() || p.len() != b.len() {
            candle_core::bail!("sgd: parameter, gradient and buffer sizes differ")
        }
        let (h, first) = (self.h, self.first);
        // Every element is written below, so the buffer starts uninitialised (no zero fill).
        let mut out: Vec<f32> = Vec::with_capacity(p.len());
        out.spare_capacity_mut()
            .par_chunks_mut(CHUNK)
            .zip(p.par_chunks(CHUNK))
            .zip(g.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
            .for_each(|((o, p), (g, b))| with_direction!(h, momentum_chunk(o, p, g, b, &h, first)));
        // SAFETY: the chunks above cover the whole capacity and wrote every element.
        unsafe { out.set_len(p.len()) };
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Which tensor an in-place pass updates.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// `buffer ← momentum · buffer + (1 - dampening) · direction`: `(buffer; param, grad)`.
    Momentum,
    /// `param ← param - lr · step`: `(param; grad, buffer)`.
    Param,
}

/// One in-place pass of the SGD step.
struct InPlace {
    h: Hyper,
    target: Target,
}

impl InplaceOp3 for InPlace {
    fn name(&self) -> &'static str {
        match self.target {
            Target::Momentum => "flambeau-sgd-momentum",
            Target::Param => "flambeau-sgd-param",
        }
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<()> {
        let (a, b) = (slice(s2, l2)?, slice(s3, l3)?);
        let dst = contiguous_f32_mut(s1, l1)?;
        if dst.len() != a.len() || dst.len() != b.len() {
            candle_core::bail!("sgd: parameter, gradient and buffer sizes differ")
        }
        let (h, target) = (self.h, self.target);
        dst.par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
            .for_each(|(d, (a, b))| match target {
                Target::Momentum => with_direction!(h, momentum_in_place(d, a, b, &h)),
                Target::Param => with_direction!(h, param_chunk(d, a, b, &h)),
            });
        Ok(())
    }
}

/// The momentum update of one chunk, in place (the same operations as [`momentum_chunk`]).
#[inline(always)]
fn momentum_in_place(
    b: &mut [f32],
    p: &[f32],
    g: &[f32],
    h: &Hyper,
    direction: impl Fn(f32, f32) -> f32,
) {
    for (b, (&p, &g)) in b.iter_mut().zip(p.iter().zip(g)) {
        *b = (*b * h.momentum + 0.0) + (direction(g, p) * h.one_minus_dampening + 0.0);
    }
}

/// The elements of a contiguous f32 tensor, to overwrite.
fn contiguous_f32_mut<'a>(s: &'a mut CpuStorage, l: &Layout) -> candle_core::Result<&'a mut [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((start, end))) => Ok(&mut v[start..end]),
        _ => candle_core::bail!("sgd: expected a contiguous f32 tensor to update in place"),
    }
}

/// The new momentum buffer for one chunk.
#[inline(always)]
fn momentum_chunk(
    out: &mut [MaybeUninit<f32>],
    p: &[f32],
    g: &[f32],
    b: &[f32],
    h: &Hyper,
    first: bool,
    direction: impl Fn(f32, f32) -> f32,
) {
    let rows = out.iter_mut().zip(p).zip(g.iter().zip(b));
    if first {
        for ((o, &p), (&g, _)) in rows {
            o.write(direction(g, p));
        }
    } else {
        for ((o, &p), (&g, &b)) in rows {
            o.write((b * h.momentum + 0.0) + (direction(g, p) * h.one_minus_dampening + 0.0));
        }
    }
}

/// The parameter update of one chunk, in place.
#[inline(always)]
fn param_chunk(
    p: &mut [f32],
    g: &[f32],
    b: &[f32],
    h: &Hyper,
    direction: impl Fn(f32, f32) -> f32,
) {
    let rows = p.iter_mut().zip(g.iter().zip(b));
    if h.momentum == 0.0 {
        for (p, (&g, _)) in rows {
            *p = *p + (direction(g, *p) * -h.lr + 0.0);
        }
    } else if h.nesterov {
        for (p, (&g, &b)) in rows {
            *p = *p + ((direction(g, *p) + (b * h.momentum + 0.0)) * -h.lr + 0.0);
        }
    } else {
        for (p, (_, &b)) in rows {
            *p += b * -h.lr + 0.0;
        }
    }
}
