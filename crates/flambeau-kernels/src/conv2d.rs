//! 2-D convolution as im2col + GEMM, forward and backward (input and weight gradients), on the
//! CPU in f32/f64; images run in parallel with rayon. Other devices and dtypes use candle's conv.
//!
//! candle's own backward for conv2d derives the input gradient's output padding from the height
//! alone, which breaks non-square inputs (an odd height with an even width, stride 2), and goes
//! through a direct-loop transposed convolution; this op has neither problem.

use std::mem::MaybeUninit;
use std::sync::{Arc, Mutex};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::conv2d_batched;
use crate::conv_params::ConvParams;
use crate::gemm::{matmul, matmul_uninit, Float, MatRef};
use crate::generic_conv2d;
use crate::im2col::Unfold;
use crate::storage::contiguous;
use crate::transpose::transpose;
use crate::uninit::{assume_init, assume_init_ref, uninit};

fn out_size(input: usize, k: usize, stride: usize, pad: usize, dil: usize) -> Option<usize> {
    let span = dil * (k - 1) + 1;
    (input + 2 * pad >= span).then(|| (input + 2 * pad - span) / stride + 1)
}

/// `conv2d(x [N,C,H,W], w [O,C/groups,kh,kw])` without bias, differentiable in both arguments.
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    padding: usize,
    dilation: usize,
    groups: usize,
) -> candle_core::Result<Tensor> {
    let (n, c, h, wd) = x.dims4()?;
    let (o, cg, kh, kw) = w.dims4()?;
    if groups == 0 || stride == 0 || dilation == 0 || kh == 0 || kw == 0 {
        candle_core::bail!("conv2d: groups, stride, dilation and kernel size must be positive")
    }
    if c != cg * groups || o % groups != 0 {
        candle_core::bail!(
            "conv2d: input has {c} channels, weight {:?} with groups {groups} expects {}",
            w.dims(),
            cg * groups
        )
    }
    let (Some(oh), Some(ow)) = (
        out_size(h, kh, stride, padding, dilation),
        out_size(wd, kw, stride, padding, dilation),
    ) else {
        candle_core::bail!(
            "conv2d: kernel {kh}x{kw} (dilation {dilation}) is larger than the padded input {h}x{wd} (padding {padding})"
        )
    };
    if !crate::mode::fast_cpu(x)
        || !matches!(x.dtype(), DType::F32 | DType::F64)
        || x.dtype() != w.dtype()
    {
        return generic_conv2d::conv2d(x, w, stride, padding, dilation, groups, (oh, ow));
    }
    let p = ConvParams {
        n,
        c,
        h,
        w: wd,
        o,
        kh,
        kw,
        stride,
        padding,
        dilation,
        groups,
        oh,
        ow,
    };
    let op = Conv2dOp {
        p,
        // Only a forward whose weight gradient will be computed keeps its im2col matrix.
        keep_cols: conv2d_batched::preferred(&p) && w.track_op(),
        cols: Arc::new(Mutex::new(None)),
    };
    x.contiguous()?.apply_op2(&w.contiguous()?, op)
}

fn slice<'a, T>(data: &'a [T], layout: &Layout) -> candle_core::Result<&'a [T]> {
    contiguous(data, layout, "conv2d")
}

/// Runs `f(image index, that image's output chunk, gemm threads)` over every image.
fn for_each_image<U: Send>(
    p: &ConvParams,
    out: &mut [U],
    chunk: usize,
    f: impl Fn(usize, &mut [U], usize) + Sync + Send,
) {
    let threads = p.gemm_threads();
    if threads == 1 {
        out.par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, y)| f(i, y, 1));
    } else {
        out.chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, y)| f(i, y, threads));
    }
}

fn forward<T: Float>(p: &ConvParams, x: &[T], w: &[T]) -> Vec<T> {
    if conv2d_batched::preferred(p) {
        return conv2d_batched::forward(p, x, w);
    }
    let (cg, og, kg, l) = (p.cg(), p.og(), p.kg(), p.l());
    let mut out = uninit(p.n * p.o * l);
    let unfold = Unfold::new(p);
    for_each_image(p, &mut out, p.o * l, |img, y, threads| {
        let mut cols = uninit(if p.pointwise() { 0 } else { kg * l });
        for g in 0..p.groups {
            let xg = &x[(img * p.c + g * cg) * p.h * p.w..][..cg * p.h * p.w];
            let b = if p.pointwise() {
                MatRef::new(xg, kg, l)
            } else {
                unfold.im2col(xg, cg, &mut cols, l);
                // SAFETY: im2col wrote every element.
                MatRef::new(unsafe { assume_init_ref(&cols) }, kg, l)
            };
            let a = MatRef::new(&w[g * og * kg..(g + 1) * og * kg], og, kg);
            matmul_uninit(&mut y[g * og * l..(g + 1) * og * l], a, b, threads);
        }
    });
    // SAFETY: every image's groups were written by their GEMMs.
    unsafe { assume_init(out) }
}

fn input_grad<T: Float>(p: &ConvParams, dy: &[T], w: &[T]) -> Vec<T> {
    if conv2d_batched::preferred(p) {
        return conv2d_batched::input_grad(p, dy, w);
    }
    let (cg, og, kg, l) = (p.cg(), p.og(), p.kg(), p.l());
    let mut dx = vec![T::zero(); p.n * p.c * p.h * p.w];
    let unfold = Unfold::new(p);
    for_each_image(p, &mut dx, p.c * p.h * p.w, |img, dxi, threads| {
        let mut dcols = uninit(kg * l);
        for g in 0..p.groups {
            let a = MatRef::new(&w[g * og * kg..(g + 1) * og * kg], og, kg).t();
            let b = MatRef::new(&dy[(img * p.o + g * og) * l..][..og * l], og, l);
            let dxg = &mut dxi[g * cg * p.h * p.w..(g + 1) * cg * p.h * p.w];
            if p.pointwise() {
                matmul(dxg, a, b, false, threads);
            } else {
                matmul_uninit(&mut dcols, a, b, threads);
                // SAFETY: the GEMM wrote every element.
                unfold.col2im(unsafe { assume_init_ref(&dcols) }, cg, dxg, l);
            }
        }
    });
    dx
}

/// Per-image scratch of the weight gradient.
struct Scratch<T> {
    cols: Vec<MaybeUninit<T>>,
    dy_t: Vec<MaybeUninit<T>>,
}

impl<T> Scratch<T> {
    fn new(p: &ConvParams) -> Self {
        Self {
            cols: uninit(if p.pointwise() { 0 } else { p.kg() * p.l() }),
            dy_t: uninit(p.l() * p.og()),
        }
    }
}

/// `dw_gᵀ += cols_g · dy_gᵀ` for one image, into the transposed gradient `[groups, kg, og]`:
/// both operands of `dy_g · cols_gᵀ` are contiguous along the reduction, which the GEMM
/// packs slowly (several times slower on 56×56 maps).
fn accumulate_weight_grad<T: Float>(
    unfold: &Unfold,
    img: usize,
    x: &[T],
    dy: &[T],
    dw_t: &mut [T],
    scratch: &mut Scratch<T>,
    threads: usize,
) {
    let p = unfold.params();
    let (cg, og, kg, l) = (p.cg(), p.og(), p.kg(), p.l());
    for g in 0..p.groups {
        let xg = &x[(img * p.c + g * cg) * p.h * p.w..][..cg * p.h * p.w];
        let cols = if p.pointwise() {
            MatRef::new(xg, kg, l)
        } else {
            unfold.im2col(xg, cg, &mut scratch.cols, l);
            // SAFETY: im2col wrote every element.
            MatRef::new(unsafe { assume_init_ref(&scratch.cols) }, kg, l)
        };
        transpose(
            &dy[(img * p.o + g * og) * l..][..og * l],
            og,
            l,
            &mut scratch.dy_t,
        );
        // SAFETY: the transpose wrote every element.
        let dy_t = MatRef::new(unsafe { assume_init_ref(&scratch.dy_t) }, l, og);
        matmul(
            &mut dw_t[g * kg * og..(g + 1) * kg * og],
            cols,
            dy_t,
            true,
            threads,
        );
    }
}

/// `[groups, kg, og]` → `[groups, og, kg]` (the weight's layout).
fn untranspose<T: Float>(p: &ConvParams, dw_t: &[T]) -> Vec<T> {
    let (og, kg) = (p.og(), p.kg());
    let mut dw = uninit(p.o * kg);
    for (src, dst) in dw_t.chunks(kg * og).zip(dw.chunks_mut(og * kg)) {
        transpose(src, kg, og, dst);
    }
    // SAFETY: every group transposed.
    unsafe { assume_init(dw) }
}

fn weight_grad<T: Float>(p: &ConvParams, x: &[T], dy: &[T]) -> Vec<T> {
    if conv2d_batched::preferred(p) {
        return conv2d_batched::weight_grad(p, x, dy);
    }
    let size = p.o * p.kg();
    let threads = p.gemm_threads();
    let unfold = Unfold::new(p);
    if threads > 1 {
        let mut dw_t = vec![T::zero(); size];
        let mut scratch = Scratch::new(p);
        for img in 0..p.n {
            accumulate_weight_grad(&unfold, img, x, dy, &mut dw_t, &mut scratch, threads);
        }
        return untranspose(p, &dw_t);
    }
    // One accumulator per fixed range of images, summed in range order: the result does not
    // depend on how rayon schedules the work, so training is reproducible bit for bit.
    let chunks = rayon::current_num_threads().clamp(1, p.n.max(1));
    let per_chunk = p.n.div_ceil(chunks).max(1);
    let partials: Vec<Vec<T>> = (0..p.n)
        .step_by(per_chunk)
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|start| {
            let mut dw_t = vec![T::zero(); size];
            let mut scratch = Scratch::new(p);
            for img in start..(start + per_chunk).min(p.n) {
                accumulate_weight_grad(&unfold, img, x, dy, &mut dw_t, &mut scratch, 1);
            }
            dw_t
        })
        .collect();
    let mut partials = partials.into_iter();
    let mut dw_t = partials.next().unwrap_or_else(|| vec![T::zero(); size]);
    for part in partials {
        for (x, y) in dw_t.iter_mut().zip(part) {
            *x += y;
        }
    }
    untranspose(p, &dw_t)
}

/// Runs a kernel on two CPU storages of the same float type (f32 or f64).
macro_rules! float_pair {
    ($what:literal, $s1:expr, $l1:expr, $s2:expr, $l2:expr, $kernel:ident, $p:expr) => {
        match ($s1, $s2) {
            (CpuStorage::F32(a), CpuStorage::F32(b)) => {
                CpuStorage::F32($kernel($p, slice(a, $l1)?, slice(b, $l2)?))
            }
            (CpuStorage::F64(a), CpuStorage::F64(b)) => {
                CpuStorage::F64($kernel($p, slice(a, $l1)?, slice(b, $l2)?))
            }
            (a, b) => candle_core::bail!(
                "{}: unsupported dtypes {:?}/{:?}",
                $what,
                a.dtype(),
                b.dtype()
            ),
        }
    };
}

/// The batched im2col matrix of a forward pass, kept for the weight gradient (f32 or f64).
type KeptCols = Arc<Mutex<Option<CpuStorage>>>;

struct Conv2dOp {
    p: ConvParams,
    keep_cols: bool,
    cols: KeptCols,
}

/// The batched forward that also returns its im2col matrix.
fn forward_keeping_cols<T: Float>(p: &ConvParams, x: &[T], w: &[T]) -> (Vec<T>, Vec<T>) {
    let cols = conv2d_batched::batched_cols(p, x);
    (conv2d_batched::forward_from_cols(p, &cols, w), cols)
}

impl CustomOp2 for Conv2dOp {
    fn name(&self) -> &'static str {
        "flambeau-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let p = &self.p;
        let out = if self.keep_cols {
            let (out, cols) = match (s1, s2) {
                (CpuStorage::F32(x), CpuStorage::F32(w)) => {
                    let (y, c) = forward_keeping_cols(p, slice(x, l1)?, slice(w, l2)?);
                    (CpuStorage::F32(y), CpuStorage::F32(c))
                }
                (CpuStorage::F64(x), CpuStorage::F64(w)) => {
                    let (y, c) = forward_keeping_cols(p, slice(x, l1)?, slice(w, l2)?);
                    (CpuStorage::F64(y), CpuStorage::F64(c))
                }
                (a, b) => {
                    candle_core::bail!("conv2d: unsupported dtypes {:?}/{:?}", a.dtype(), b.dtype())
                }
            };
            *self.cols.lock().expect("not poisoned") = Some(cols);
            out
        } else {
            float_pair!("conv2d", s1, l1, s2, l2, forward, p)
        };
        Ok((out, Shape::from((p.n, p.o, p.oh, p.ow))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        // Only the gradients autograd will use: not the image's (a network's first layer),
        // nor a frozen weight's.
        let dx = x
            .track_op()
            .then(|| grad.apply_op2_no_bwd(w, &ConvInputGrad(self.p)))
            .transpose()?;
        let kept = self.cols.lock().expect("not poisoned").take();
        let dw = w
            .track_op()
            .then(|| x.apply_op2_no_bwd(&grad, &ConvWeightGrad { p: self.p, kept }))
            .transpose()?;
        Ok((dx, dw))
    }
}

/// `(grad_output, weight) → grad_input`.
struct ConvInputGrad(ConvParams);

impl CustomOp2 for ConvInputGrad {
    fn name(&self) -> &'static str {
        "flambeau-conv2d-input-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let p = &self.0;
        let out = float_pair!("conv2d backward", s1, l1, s2, l2, input_grad, p);
        Ok((out, Shape::from((p.n, p.c, p.h, p.w))))
    }
}

/// `(input, grad_output) → grad_weight`, from the forward's im2col matrix when it was kept.
struct ConvWeightGrad {
    p: ConvParams,
    kept: Option<CpuStorage>,
}

impl CustomOp2 for ConvWeightGrad {
    fn name(&self) -> &'static str {
        "flambeau-conv2d-weight-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let p = &self.p;
        let out = match (&self.kept, s2) {
            (Some(CpuStorage::F32(cols)), CpuStorage::F32(dy)) => CpuStorage::F32(
                conv2d_batched::weight_grad_from_cols(p, cols, slice(dy, l2)?),
            ),
            (Some(CpuStorage::F64(cols)), CpuStorage::F64(dy)) => CpuStorage::F64(
                conv2d_batched::weight_grad_from_cols(p, cols, slice(dy, l2)?),
            ),
            _ => float_pair!("conv2d backward", s1, l1, s2, l2, weight_grad, p),
        };
        Ok((out, Shape::from((p.o, p.cg(), p.kh, p.kw))))
    }
}
