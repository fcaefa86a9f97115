//! Device-generic max pooling, from candle tensor ops that all have CUDA kernels.
//!
//! The `k×k` window elements become a last axis (one strided view of the zero-padded input per
//! element), and a selection mask picks, per window, the element PyTorch picks: the first maximum
//! among the real (non-padding) elements, or the last NaN when the window holds one. The output is
//! the masked sum over that axis, so autograd routes each gradient to exactly the selected
//! element, with PyTorch's tie-breaking, on every device.

use candle_core::{DType, Tensor, D};

use crate::generic_window::{taps, Window};

/// Max pooling of `[N, C, H, W]` with the window `g`.
pub(crate) fn max_pool2d(xs: &Tensor, g: Window) -> candle_core::Result<Tensor> {
    let (_, _, h, w) = xs.dims4()?;
    let elements = taps(xs, g, 4)?;
    let valid = taps(&Tensor::ones((1, 1, h, w), DType::U8, xs.device())?, g, 4)?;
    let select = selection(&elements, &valid)?;
    select
        .where_cond(&elements, &elements.zeros_like()?)?
        .sum_keepdim(D::Minus1)?
        .squeeze(D::Minus1)
}

/// The mask (u8, last axis) of the element each window selects.
fn selection(taps: &Tensor, valid: &Tensor) -> candle_core::Result<Tensor> {
    let valid = valid.broadcast_as(taps.shape())?;
    let nan = taps.ne(taps)?;
    let real = valid.mul(&nan.ones_like()?.sub(&nan)?)?;
    // First maximum among the real, non-NaN elements.
    let neg_inf =
        Tensor::full(f32::NEG_INFINITY, taps.shape(), taps.device())?.to_dtype(taps.dtype())?;
    let candidates = real.where_cond(taps, &neg_inf)?;
    let max = candidates.max_keepdim(D::Minus1)?;
    let at_max = candidates.broadcast_eq(&max)?.mul(&real)?;
    let first_max = first_or_last(&at_max, true)?;
    // A window holding a NaN selects its last NaN (PyTorch's `val > maxval || isnan(val)`).
    let nan = nan.mul(&valid)?;
    let last_nan = first_or_last(&nan, false)?;
    let any_nan = nan.max_keepdim(D::Minus1)?.broadcast_as(taps.shape())?;
    any_nan.where_cond(&last_nan, &first_max)
}

/// Of the set elements of a 0/1 mask along the last axis, only the first (or the last).
fn first_or_last(mask: &Tensor, first: bool) -> candle_core::Result<Tensor> {
    let counts = mask.to_dtype(DType::F32)?.cumsum(D::Minus1)?;
    let wanted = if first {
        counts.ones_like()?
    } else {
        counts
            .narrow(D::Minus1, counts.dim(D::Minus1)? - 1, 1)?
            .broadcast_as(counts.shape())?
            .contiguous()?
    };
    counts.eq(&wanted)?.mul(mask)
}
