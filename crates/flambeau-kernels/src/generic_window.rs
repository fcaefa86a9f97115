//! Sliding windows from candle tensor ops (pad, narrow, reshape, stack), which exist on every
//! device and have backward passes: the shared first step of the device-generic convolution
//! (im2col) and max pooling.

use candle_core::Tensor;

/// A window sliding over `[N, C, H, W]`; sizes already validated by the caller.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    /// Kernel height and width.
    pub kh: usize,
    pub kw: usize,
    /// Stride, zero padding and dilation (both directions).
    pub s: usize,
    pub p: usize,
    pub d: usize,
    /// Output height and width.
    pub oh: usize,
    pub ow: usize,
}

impl Window {
    /// Padded input rows (or columns) the windows read along an axis with `out` outputs.
    fn span(&self, k: usize, out: usize) -> usize {
        (out - 1) * self.s + self.d * (k - 1) + 1
    }
}

/// Element `(ky, kx)` of every window over the last two axes of a 4-D tensor (`[N, C, oh,
/// ow]` each for `[N, C, H, W]`), stacked along `dim` in row-major `ky, kx` order, from the
/// zero-padded input.
pub(crate) fn taps(xs: &Tensor, g: Window, dim: usize) -> candle_core::Result<Tensor> {
    let (_, _, h, w) = xs.dims4()?;
    let padded = pad_to_span(xs, 2, h, g.span(g.kh, g.oh), g.p)?;
    let padded = pad_to_span(&padded, 3, w, g.span(g.kw, g.ow), g.p)?;
    let mut taps = Vec::with_capacity(g.kh * g.kw);
    for ky in 0..g.kh {
        let rows = padded.narrow(2, ky * g.d, (g.oh - 1) * g.s + 1)?;
        let rows = every_nth(&rows, 2, g.s, g.oh)?;
        for kx in 0..g.kw {
            let cols = rows.narrow(3, kx * g.d, (g.ow - 1) * g.s + 1)?;
            taps.push(every_nth(&cols, 3, g.s, g.ow)?);
        }
    }
    Tensor::stack(&taps, dim)
}

/// Pads `dim` (of size `size`) by `p` in front and to exactly `span`.
fn pad_to_span(
    xs: &Tensor,
    dim: usize,
    size: usize,
    span: usize,
    p: usize,
) -> candle_core::Result<Tensor> {
    let after = span.saturating_sub(p + size);
    xs.pad_with_zeros(dim, p, after)?.narrow(dim, 0, span)
}

/// Rows (or columns) `0, s, 2s, …` of `dim`, whose size is `(out - 1)·s + 1`.
fn every_nth(xs: &Tensor, dim: usize, s: usize, out: usize) -> candle_core::Result<Tensor> {
    if s == 1 {
        return Ok(xs.clone());
    }
    let mut shape = xs.dims().to_vec();
    let grouped = xs.pad_with_zeros(dim, 0, s - 1)?;
    shape[dim] = out;
    shape.insert(dim + 1, s);
    grouped
        .reshape(shape)?
        .narrow(dim + 1, 0, 1)?
        .squeeze(dim + 1)
}
