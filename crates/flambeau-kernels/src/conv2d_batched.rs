//! Convolution over the whole batch as one GEMM, for small feature maps.
//!
//! With few output positions per image (ResNet's late stages: 4×4, 2×2, 1×1 on 32×32 inputs)
//! a GEMM per image degenerates into a matrix-vector product that streams the whole weight
//! matrix once per image. Here the im2col matrices of all images sit side by side
//! (`[K, N·L]`), so each pass multiplies the weights once: forward `Y = W·cols`, input gradient
//! `dcols = Wᵀ·dY`, weight gradient `dW = dY·colsᵀ` (a single reduction over `N·L`, in a
//! fixed order). Only for `groups == 1`; the per-image path handles the rest.

use rayon::prelude::*;

use crate::conv_params::ConvParams;
use crate::gemm::{matmul_uninit, Float, MatRef};
use crate::im2col::Unfold;
use crate::transpose::transpose;
use crate::uninit::{assume_init, assume_init_ref, uninit};

/// Whether the batched path is the faster one for this convolution.
pub fn preferred(p: &ConvParams) -> bool {
    p.groups == 1 && p.oh * p.ow <= 256 && p.n > 1
}

fn threads() -> usize {
    rayon::current_num_threads()
}

/// `[K, N·L]`: every image's im2col matrix, side by side (for a pointwise convolution, the
/// input itself regrouped by channel).
pub fn batched_cols<T: Float>(p: &ConvParams, x: &[T]) -> Vec<T> {
    let nl = p.n * p.oh * p.ow;
    let taps = p.kh * p.kw;
    let mut cols = uninit(p.c * taps * nl);
    let unfold = Unfold::new(p);
    cols.par_chunks_mut(taps * nl)
        .enumerate()
        .for_each(|(c, rows)| unfold.im2col_batch(x, c, rows));
    // SAFETY: each channel's rows are filled for every image, all columns of all rows.
    unsafe { assume_init(cols) }
}

/// `[O, N·L]` → `[N, O, L]`.
fn scatter_to_images<T: Float>(p: &ConvParams, batched: &[T]) -> Vec<T> {
    let (l, nl) = (p.oh * p.ow, p.n * p.oh * p.ow);
    let mut out = uninit(p.n * p.o * l);
    out.par_chunks_mut(p.o * l)
        .enumerate()
        .for_each(|(img, y)| {
            for (o, row) in y.chunks_mut(l).enumerate() {
                row.write_copy_of_slice(&batched[o * nl + img * l..][..l]);
            }
        });
    // SAFETY: every row of every image copied.
    unsafe { assume_init(out) }
}

/// `[N, O, L]` → `[O, N·L]`.
fn gather_from_images<T: Float>(p: &ConvParams, dy: &[T]) -> Vec<T> {
    let (l, nl) = (p.oh * p.ow, p.n * p.oh * p.ow);
    let mut out = uninit(p.o * nl);
    out.par_chunks_mut(nl).enumerate().for_each(|(o, row)| {
        for (img, dst) in row.chunks_mut(l).enumerate() {
            dst.write_copy_of_slice(&dy[(img * p.o + o) * l..][..l]);
        }
    });
    // SAFETY: every image's block of every row copied.
    unsafe { assume_init(out) }
}

/// The convolution's output `[N, O, oh, ow]`.
pub fn forward<T: Float>(p: &ConvParams, x: &[T], w: &[T]) -> Vec<T> {
    forward_from_cols(p, &batched_cols(p, x), w)
}

/// The output from the input's [`batched_cols`] (kept by the forward for the weight gradient).
pub fn forward_from_cols<T: Float>(p: &ConvParams, cols: &[T], w: &[T]) -> Vec<T> {
    let (k, nl) = (p.c * p.kh * p.kw, p.n * p.oh * p.ow);
    let mut y = uninit(p.o * nl);
    matmul_uninit(
        &mut y,
        MatRef::new(w, p.o, k),
        MatRef::new(cols, k, nl),
        threads(),
    );
    // SAFETY: the GEMM wrote all of it.
    scatter_to_images(p, unsafe { assume_init_ref(&y) })
}

/// The gradient of the input `[N, C, H, W]`.
pub fn input_grad<T: Float>(p: &ConvParams, dy: &[T], w: &[T]) -> Vec<T> {
    let (k, nl) = (p.c * p.kh * p.kw, p.n * p.oh * p.ow);
    let dy = gather_from_images(p, dy);
    let mut dcols = uninit(k * nl);
    matmul_uninit(
        &mut dcols,
        MatRef::new(w, p.o, k).t(),
        MatRef::new(&dy, p.o, nl),
        threads(),
    );
    // SAFETY: the GEMM wrote all of it.
    let dcols = unsafe { assume_init(dcols) };
    // col2im channel by channel into `[C, N, H, W]` (tap by tap over the images), then
    // regrouped by image.
    let (hw, taps) = (p.h * p.w, p.kh * p.kw);
    let mut by_channel = vec![T::zero(); p.c * p.n * hw];
    let unfold = Unfold::new(p);
    by_channel
        .par_chunks_mut(p.n * hw)
        .zip(dcols.par_chunks(taps * nl))
        .for_each(|(planes, rows)| unfold.col2im_batch(rows, planes));
    let mut dx = uninit(p.n * p.c * hw);
    dx.par_chunks_mut(p.c * hw)
        .enumerate()
        .for_each(|(img, dxi)| {
            for (c, plane) in dxi.chunks_mut(hw).enumerate() {
                plane.write_copy_of_slice(&by_channel[(c * p.n + img) * hw..][..hw]);
            }
        });
    // SAFETY: every plane of every image copied.
    unsafe { assume_init(dx) }
}

/// The gradient of the weight `[O, C, kh, kw]`.
pub fn weight_grad<T: Float>(p: &ConvParams, x: &[T], dy: &[T]) -> Vec<T> {
    weight_grad_from_cols(p, &batched_cols(p, x), dy)
}

/// Below this many columns (`N·L`) `dW = dY · colsᵀ` is as fast as the transposed form, and
/// transposing the (then relatively large) weight gradient would only add time.
const TRANSPOSED_WEIGHT_GRAD_MIN_COLUMNS: usize = 512;

/// The weight gradient from the input's [`batched_cols`].
///
/// For wide `cols` it is computed transposed, `dWᵀ [K, O] = cols · dYᵀ`, then transposed back:
/// both operands of `dY · colsᵀ` are contiguous along the long reduction, which the GEMM packs
/// slowly (6–8× slower on ResNet's 8×8 stage at batch 32).
pub fn weight_grad_from_cols<T: Float>(p: &ConvParams, cols: &[T], dy: &[T]) -> Vec<T> {
    let (k, l, nl) = (p.c * p.kh * p.kw, p.oh * p.ow, p.n * p.oh * p.ow);
    if nl < TRANSPOSED_WEIGHT_GRAD_MIN_COLUMNS {
        let dy = gather_from_images(p, dy);
        let mut dw = uninit(p.o * k);
        matmul_uninit(
            &mut dw,
            MatRef::new(&dy, p.o, nl),
            MatRef::new(cols, k, nl).t(),
            threads(),
        );
        // SAFETY: the GEMM wrote all of it.
        return unsafe { assume_init(dw) };
    }
    let mut dy_t = uninit(nl * p.o);
    dy_t.par_chunks_mut(l * p.o)
        .enumerate()
        .for_each(|(img, rows)| transpose(&dy[img * p.o * l..][..p.o * l], p.o, l, rows));
    // SAFETY: every image's block transposed.
    let dy_t = unsafe { assume_init(dy_t) };
    let mut dw_t = uninit(k * p.o);
    matmul_uninit(
        &mut dw_t,
        MatRef::new(cols, k, nl),
        MatRef::new(&dy_t, nl, p.o),
        threads(),
    );
    let mut dw = uninit(p.o * k);
    // SAFETY: the GEMM wrote all of `dw_t`.
    transpose(unsafe { assume_init_ref(&dw_t) }, k, p.o, &mut dw);
    // SAFETY: the transpose wrote all of it.
    unsafe { assume_init(dw) }
}
