//! Device-generic 2-D convolution: im2col from tensor ops, then one batched matmul per group.
//!
//! Built only from ops with backward passes on every device (pad, narrow, reshape, stack,
//! matmul), so autograd yields both gradients. candle's own `conv2d` is not used: its backward
//! derives the input gradient's output padding from the height alone (wrong widths for stride
//! 2 on odd, non-square inputs), and on the CPU it disagreed with PyTorch on a ResNet training
//! step where this formulation agrees.

use candle_core::Tensor;

use crate::generic_window::{taps, Window};

/// `conv2d(x, w)` without bias; `(oh, ow)` is the output size the caller already checked.
pub(crate) fn conv2d(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    padding: usize,
    dilation: usize,
    groups: usize,
    (oh, ow): (usize, usize),
) -> candle_core::Result<Tensor> {
    let (n, c, _, _) = x.dims4()?;
    let (o, cg, kh, kw) = w.dims4()?;
    let window = Window {
        kh,
        kw,
        s: stride,
        p: padding,
        d: dilation,
        oh,
        ow,
    };
    // [N, C, kh·kw, oh, ow] → per group [N, C/groups · kh·kw, oh·ow] (the weight's row order).
    let cols = taps(x, window, 2)?;
    let og = o / groups;
    let mut outs = Vec::with_capacity(groups);
    for g in 0..groups {
        let cols_g = cols
            .narrow(1, g * cg, cg)?
            .reshape((n, cg * kh * kw, oh * ow))?;
        let w_g = w.narrow(0, g * og, og)?.reshape((og, cg * kh * kw))?;
        outs.push(w_g.broadcast_matmul(&cols_g)?);
    }
    let y = if groups == 1 {
        outs.pop().expect("one group")
    } else {
        Tensor::cat(&outs, 1)?
    };
    debug_assert_eq!(c, cg * groups);
    y.reshape((n, o, oh, ow))
}
