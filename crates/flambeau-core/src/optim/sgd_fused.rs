//! The SGD update of one CPU f32 parameter in two parallel passes (momentum buffer, then
//! parameter) instead of a chain of candle ops, several of them single-threaded. Every element
//! goes through the same f32 operations, in the same order, as the composed path (candle's
//! `affine(a, 0)` is `x * a + 0`), so results are bit-identical.

use candle_core::{CpuStorage, CustomOp3, DType, Device, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::ops::storage::contiguous_f32;

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
    matches!(param.device(), Device::Cpu)
        && param.dtype() == DType::F32
        && grad.dtype() == DType::F32
        && param.shape() == grad.shape()
}

/// The new momentum buffer (`old` is `None` on the first step: the buffer starts as the
/// gradient, as in PyTorch).
pub fn momentum_buffer(
    h: Hyper,
    param: &Tensor,
    grad: &Tensor,
    old: Option<&Tensor>,
) -> candle_core::Result<Tensor> {
    let param = param.contiguous()?;
    let (old, first) = match old {
        Some(b) => (b.contiguous()?, false),
        None => (param.clone(), true), // not read
    };
    param.apply_op3_no_bwd(
        &grad.contiguous()?,
        &old,
        &Update {
            h,
            what: What::Buffer { first },
        },
    )
}

/// The updated parameter, given the new momentum buffer (ignored without momentum).
pub fn updated_param(
    h: Hyper,
    param: &Tensor,
    grad: &Tensor,
    buffer: &Tensor,
) -> candle_core::Result<Tensor> {
    param.contiguous()?.apply_op3_no_bwd(
        &grad.contiguous()?,
        &buffer.contiguous()?,
        &Update {
            h,
            what: What::Param,
        },
    )
}

#[derive(Debug, Clone, Copy)]
enum What {
    Buffer { first: bool },
    Param,
}

struct Update {
    h: Hyper,
    what: What,
}

fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    contiguous_f32(s, l, "sgd")
}

const CHUNK: usize = 1 << 14;

impl CustomOp3 for Update {
    fn name(&self) -> &'static str {
        "flambeau-sgd-update"
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
        let h = self.h;
        let what = self.what;
        let mut out = vec![0f32; p.len()];
        out.par_chunks_mut(CHUNK)
            .zip(p.par_chunks(CHUNK))
            .zip(g.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
            .for_each(
                |((o, p), (g, b))| match (h.maximize, h.weight_decay != 0.0) {
                    (false, false) => kernel(o, p, g, b, &h, what, |g, _| g),
                    (false, true) => {
                        kernel(o, p, g, b, &h, what, |g, p| g + (p * h.weight_decay + 0.0))
                    }
                    (true, false) => kernel(o, p, g, b, &h, what, |g, _| -g),
                    (true, true) => {
                        kernel(o, p, g, b, &h, what, |g, p| -g + (p * h.weight_decay + 0.0))
                    }
                },
            );
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// One chunk, with `direction(g, p)` (the gradient after `maximize` and weight decay) and the
/// case chosen outside the loop so that each loop vectorises.
#[inline(always)]
fn kernel(
    o: &mut [f32],
    p: &[f32],
    g: &[f32],
    b: &[f32],
    h: &Hyper,
    what: What,
    direction: impl Fn(f32, f32) -> f32,
) {
    let rows = o.iter_mut().zip(p).zip(g.iter().zip(b));
    match what {
        What::Buffer { first: true } => {
            for ((o, &p), (&g, _)) in rows {
                *o = direction(g, p);
            }
        }
        What::Buffer { first: false } => {
            for ((o, &p), (&g, &b)) in rows {
                *o = (b * h.momentum + 0.0) + (direction(g, p) * h.one_minus_dampening + 0.0);
            }
        }
        What::Param if h.momentum == 0.0 => {
            for ((o, &p), (&g, _)) in rows {
                *o = p + (direction(g, p) * -h.lr + 0.0);
            }
        }
        What::Param if h.nesterov => {
            for ((o, &p), (&g, &b)) in rows {
                *o = p + ((direction(g, p) + (b * h.momentum + 0.0)) * -h.lr + 0.0);
            }
        }
        What::Param => {
            for ((o, &p), (_, &b)) in rows {
                *o = p + (b * -h.lr + 0.0);
            }
        }
    }
}
