//! im2col / col2im for one image and one channel group.
//!
//! `cols` is `[C·kh·kw, oh·ow]` row-major with row stride `ld` (`oh·ow` for one image; the
//! batched convolution puts all images side by side, `ld = N·oh·ow`): row `(c, ky, kx)` holds,
//! for every output position, the input pixel that kernel tap sees (zero in the padding).

use std::mem::MaybeUninit;

use crate::conv_params::ConvParams;
use crate::gemm::Float;

/// The output columns `ox` whose input column `ox·stride + offset` lies inside `0..w`
/// (`offset = kx·dilation - padding`): taps outside are padding.
fn valid_range(ow: usize, w: usize, stride: usize, offset: isize) -> std::ops::Range<usize> {
    let s = stride as isize;
    // First ox with ox·s + offset >= 0, and first with ox·s + offset >= w.
    let lo = if offset >= 0 {
        0
    } else {
        (-offset + s - 1) / s
    };
    let hi = if offset >= w as isize {
        0
    } else {
        (w as isize - offset + s - 1) / s
    };
    let lo = (lo as usize).min(ow);
    lo..(hi as usize).clamp(lo, ow)
}

/// A stride-1 convolution whose output is as large as its input (ResNet's 3×3 padding-1
/// convolutions): every kernel tap reads the plane shifted by one flat offset, so a tap's row
/// is one long copy (or add) in which only the columns that wrap around a row edge are masked.
/// On 8×8 and smaller maps this replaces many 1–8 element copies.
struct SameShift {
    /// Per `kx`: whether each output position's column is inside the input for that tap.
    column_masks: Vec<Vec<bool>>,
    /// Per tap `ky·kw + kx`: see [`SameShift::span`].
    spans: Vec<Option<(std::ops::Range<usize>, isize)>>,
}

impl SameShift {
    fn new(p: &ConvParams) -> Option<Self> {
        if p.stride != 1 || p.oh != p.h || p.ow != p.w {
            return None;
        }
        let column_masks = (0..p.kw)
            .map(|kx| {
                let valid = valid_range(p.ow, p.w, 1, kx_offset(p, kx));
                (0..p.oh * p.ow)
                    .map(|i| valid.contains(&(i % p.ow)))
                    .collect()
            })
            .collect();
        let spans = (0..p.kh * p.kw)
            .map(|t| Self::tap_span(p, t / p.kw, t % p.kw))
            .collect();
        Some(Self {
            column_masks,
            spans,
        })
    }

    /// For tap `(ky, kx)`: the output positions from the first to the last valid one, and the
    /// flat offset from an output position to the input pixel it reads. `None` if the tap
    /// sees only padding.
    fn span(
        &self,
        p: &ConvParams,
        ky: usize,
        kx: usize,
    ) -> Option<(std::ops::Range<usize>, isize)> {
        self.spans[ky * p.kw + kx].clone()
    }

    fn tap_span(p: &ConvParams, ky: usize, kx: usize) -> Option<(std::ops::Range<usize>, isize)> {
        let rows = valid_range(
            p.oh,
            p.h,
            1,
            (ky * p.dilation) as isize - p.padding as isize,
        );
        let cols = valid_range(p.ow, p.w, 1, kx_offset(p, kx));
        if rows.is_empty() || cols.is_empty() {
            return None;
        }
        let offset =
            ((ky * p.dilation) as isize - p.padding as isize) * p.w as isize + kx_offset(p, kx);
        Some((
            rows.start * p.ow + cols.start..(rows.end - 1) * p.ow + cols.end,
            offset,
        ))
    }
}

fn kx_offset(p: &ConvParams, kx: usize) -> isize {
    (kx * p.dilation) as isize - p.padding as isize
}

/// [`im2col`] for [`SameShift`] convolutions, over `images` planes `plane_stride` apart in
/// `x` whose columns sit side by side in `cols` (one image: `images = 1`).
#[allow(clippy::too_many_arguments)]
fn im2col_same_shift<T: Float>(
    x: &[T],
    channels: usize,
    p: &ConvParams,
    s: &SameShift,
    cols: &mut [MaybeUninit<T>],
    ld: usize,
    images: usize,
    plane_stride: usize,
) {
    let l = p.oh * p.ow;
    for c in 0..channels {
        for ky in 0..p.kh {
            for kx in 0..p.kw {
                let row = (c * p.kh + ky) * p.kw + kx;
                let span = s.span(p, ky, kx);
                for img in 0..images {
                    let dst = &mut cols[row * ld + img * l..][..l];
                    let Some((span, offset)) = span.clone() else {
                        dst.fill(MaybeUninit::new(T::zero()));
                        continue;
                    };
                    let plane = &x[img * plane_stride + c * l..][..l];
                    dst[..span.start].fill(MaybeUninit::new(T::zero()));
                    dst[span.end..].fill(MaybeUninit::new(T::zero()));
                    let src = &plane[(span.start as isize + offset) as usize..];
                    let mask = &s.column_masks[kx][span.clone()];
                    for ((d, &v), &m) in dst[span].iter_mut().zip(src).zip(mask) {
                        d.write(if m { v } else { T::zero() });
                    }
                }
            }
        }
    }
}

/// [`col2im`] for [`SameShift`] convolutions (masked columns add zero).
/// Over `images` planes of `dx`, one after the other, whose columns sit side by side in `cols`
/// (one image: `images = 1`).
fn col2im_same_shift<T: Float>(
    cols: &[T],
    channels: usize,
    p: &ConvParams,
    s: &SameShift,
    dx: &mut [T],
    ld: usize,
    images: usize,
) {
    let l = p.oh * p.ow;
    for c in 0..channels {
        for ky in 0..p.kh {
            for kx in 0..p.kw {
                let Some((span, offset)) = s.span(p, ky, kx) else {
                    continue;
                };
                let row = (c * p.kh + ky) * p.kw + kx;
                let mask = &s.column_masks[kx][span.clone()];
                for img in 0..images {
                    let plane = &mut dx[(img * channels + c) * l..][..l];
                    let src = &cols[row * ld + img * l..][..l][span.clone()];
                    let dst = &mut plane[(span.start as isize + offset) as usize..];
                    for ((d, &v), &m) in dst.iter_mut().zip(src).zip(mask) {
                        *d += if m { v } else { T::zero() };
                    }
                }
            }
        }
    }
}

/// im2col and col2im for one convolution, with what can be prepared once per call of the op.
pub struct Unfold {
    p: ConvParams,
    same_shift: Option<SameShift>,
}

impl Unfold {
    pub fn new(p: &ConvParams) -> Self {
        Self {
            p: *p,
            same_shift: SameShift::new(p),
        }
    }

    /// The convolution it unfolds.
    pub fn params(&self) -> &ConvParams {
        &self.p
    }

    /// Fills `cols` from `x` (`[C, H, W]` contiguous): rows `r·ld .. r·ld + oh·ow` for every
    /// row `r` of the `[channels·kh·kw, oh·ow]` matrix, every element written.
    pub fn im2col<T: Float>(
        &self,
        x: &[T],
        channels: usize,
        cols: &mut [MaybeUninit<T>],
        ld: usize,
    ) {
        match &self.same_shift {
            Some(s) => im2col_same_shift(x, channels, &self.p, s, cols, ld, 1, 0),
            None => im2col(x, channels, &self.p, cols, ld, 1, 0),
        }
    }

    /// The rows of input channel `c` for every image of the batch `x` (`[N, C, H, W]`), the
    /// images' columns side by side: `cols` is `[kh·kw, N·oh·ow]` (`ld = N·oh·ow`).
    pub fn im2col_batch<T: Float>(&self, x: &[T], c: usize, cols: &mut [MaybeUninit<T>]) {
        let p = &self.p;
        let (hw, l) = (p.h * p.w, p.oh * p.ow);
        let ld = p.n * l;
        match &self.same_shift {
            // Tap by tap over the images: each tap's geometry is worked out once.
            Some(s) => im2col_same_shift(&x[c * hw..], 1, p, s, cols, ld, p.n, p.c * hw),
            None => im2col(&x[c * hw..], 1, p, cols, ld, p.n, p.c * hw),
        }
    }

    /// Adds `cols` back into `dx` (`[C, H, W]` contiguous): the adjoint of [`Unfold::im2col`].
    pub fn col2im<T: Float>(&self, cols: &[T], channels: usize, dx: &mut [T], ld: usize) {
        match &self.same_shift {
            Some(s) => col2im_same_shift(cols, channels, &self.p, s, dx, ld, 1),
            None => col2im(cols, channels, &self.p, dx, ld),
        }
    }

    /// Adds channel `c`'s rows (`[kh·kw, N·oh·ow]`, the images' columns side by side) into
    /// `dx`, that channel's planes of every image one after the other (`[N, H, W]`): the
    /// adjoint of [`Unfold::im2col_batch`].
    pub fn col2im_batch<T: Float>(&self, cols: &[T], dx: &mut [T]) {
        let p = &self.p;
        let (hw, l) = (p.h * p.w, p.oh * p.ow);
        let ld = p.n * l;
        match &self.same_shift {
            Some(s) => col2im_same_shift(cols, 1, p, s, dx, ld, p.n),
            None => {
                for (img, plane) in dx.chunks_mut(hw).enumerate() {
                    col2im(&cols[img * l..], 1, p, plane, ld);
                }
            }
        }
    }
}

/// `dst[i] = src[i·stride]`. Fixed-size chunks rather than `step_by`: the compiler turns them
/// into vector shuffles (a stride-2 stem's im2col runs several times faster).
fn gather_strided<T: Copy>(dst: &mut [MaybeUninit<T>], src: &[T], stride: usize) {
    let Some((last, head)) = dst.split_last_mut() else {
        return;
    };
    for (d, s) in head.iter_mut().zip(src.chunks_exact(stride)) {
        d.write(s[0]);
    }
    last.write(src[head.len() * stride]);
}

/// `dst[i·stride] += vals[i]`: the adjoint of [`gather_strided`].
fn scatter_add_strided<T: Float>(dst: &mut [T], vals: &[T], stride: usize) {
    let Some((last, head)) = vals.split_last() else {
        return;
    };
    for (d, &v) in dst.chunks_exact_mut(stride).zip(head) {
        d[0] += v;
    }
    dst[head.len() * stride] += *last;
}

/// Fills `cols` from `x` (`[C, H, W]` contiguous), any stride.
#[allow(clippy::too_many_arguments)]
fn im2col<T: Float>(
    x: &[T],
    channels: usize,
    p: &ConvParams,
    cols: &mut [MaybeUninit<T>],
    ld: usize,
    images: usize,
    plane_stride: usize,
) {
    let (h, w, oh, ow) = (p.h, p.w, p.oh, p.ow);
    let l = oh * ow;
    for c in 0..channels {
        for ky in 0..p.kh {
            for kx in 0..p.kw {
                let row = (c * p.kh + ky) * p.kw + kx;
                let offset = (kx * p.dilation) as isize - p.padding as isize;
                let valid = valid_range(ow, w, p.stride, offset);
                let first = (valid.start * p.stride) as isize + offset;
                for img in 0..images {
                    let plane = &x[img * plane_stride + c * h * w..][..h * w];
                    let dst = &mut cols[row * ld + img * l..][..l];
                    for (oy, out_row) in dst.chunks_mut(ow).enumerate() {
                        let iy = (oy * p.stride + ky * p.dilation) as isize - p.padding as isize;
                        if iy < 0 || iy >= h as isize || valid.is_empty() {
                            out_row.fill(MaybeUninit::new(T::zero()));
                            continue;
                        }
                        let src = &plane[iy as usize * w + first as usize..];
                        out_row[..valid.start].fill(MaybeUninit::new(T::zero()));
                        out_row[valid.end..].fill(MaybeUninit::new(T::zero()));
                        let out = &mut out_row[valid.clone()];
                        if p.stride == 1 {
                            out.write_copy_of_slice(&src[..out.len()]);
                        } else {
                            gather_strided(out, src, p.stride);
                        }
                    }
                }
            }
        }
    }
}

/// Adds `cols` back into `dx` (`[C, H, W]` contiguous), any stride: the adjoint of [`im2col`].
fn col2im<T: Float>(cols: &[T], channels: usize, p: &ConvParams, dx: &mut [T], ld: usize) {
    let (h, w, oh, ow) = (p.h, p.w, p.oh, p.ow);
    let l = oh * ow;
    for c in 0..channels {
        let plane = &mut dx[c * h * w..(c + 1) * h * w];
        for ky in 0..p.kh {
            for kx in 0..p.kw {
                let row = (c * p.kh + ky) * p.kw + kx;
                let src = &cols[row * ld..row * ld + l];
                let offset = (kx * p.dilation) as isize - p.padding as isize;
                let valid = valid_range(ow, w, p.stride, offset);
                if valid.is_empty() {
                    continue;
                }
                let first = (valid.start * p.stride) as isize + offset;
                for oy in 0..oh {
                    let iy = (oy * p.stride + ky * p.dilation) as isize - p.padding as isize;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    let dst = &mut plane[iy as usize * w..(iy as usize + 1) * w][first as usize..];
                    let vals = &src[oy * ow..(oy + 1) * ow][valid.clone()];
                    if p.stride == 1 {
                        // Contiguous on both sides: a loop the compiler vectorises.
                        for (d, &v) in dst[..vals.len()].iter_mut().zip(vals) {
                            *d += v;
                        }
                    } else {
                        scatter_add_strided(dst, vals, p.stride);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(
        hw: (usize, usize),
        k: (usize, usize),
        padding: usize,
        dilation: usize,
    ) -> ConvParams {
        let out = |i: usize, k: usize| i + 2 * padding - dilation * (k - 1);
        ConvParams {
            n: 1,
            c: 2,
            h: hw.0,
            w: hw.1,
            o: 1,
            kh: k.0,
            kw: k.1,
            stride: 1,
            padding,
            dilation,
            groups: 1,
            oh: out(hw.0, k.0),
            ow: out(hw.1, k.1),
        }
    }

    #[test]
    fn same_shift_matches_the_general_path() {
        for p in [
            params((8, 8), (3, 3), 1, 1),
            params((5, 3), (3, 3), 1, 1),
            params((1, 1), (3, 3), 1, 1),
            params((2, 7), (3, 3), 1, 1),
            params((6, 6), (3, 3), 2, 2),
            params((4, 5), (5, 5), 2, 1),
            params((3, 2), (1, 1), 0, 1),
        ] {
            let shift = SameShift::new(&p).expect("same-size stride-1 convolution");
            let (l, rows) = (p.oh * p.ow, p.c * p.kh * p.kw);
            let x: Vec<f64> = (0..p.c * p.h * p.w).map(|i| i as f64 + 1.0).collect();
            let ld = l + 3; // a wider leading dimension, as in the batched convolution
            let mut fast = vec![MaybeUninit::new(f64::NAN); rows * ld];
            let mut slow = fast.clone();
            im2col_same_shift(&x, p.c, &p, &shift, &mut fast, ld, 1, 0);
            im2col(&x, p.c, &p, &mut slow, ld, 1, 0);
            // SAFETY: initialised above (NaN where the functions do not write).
            let (fast, slow): (Vec<f64>, Vec<f64>) = unsafe {
                (
                    fast.iter().map(|v| v.assume_init()).collect(),
                    slow.iter().map(|v| v.assume_init()).collect(),
                )
            };
            for r in 0..rows {
                assert_eq!(
                    fast[r * ld..r * ld + l],
                    slow[r * ld..r * ld + l],
                    "{p:?} row {r}"
                );
            }
            let cols: Vec<f64> = (0..rows * ld).map(|i| (i % 7) as f64 - 3.0).collect();
            let (mut fast, mut slow) = (vec![0.5; x.len()], vec![0.5; x.len()]);
            col2im_same_shift(&cols, p.c, &p, &shift, &mut fast, ld, 1);
            col2im(&cols, p.c, &p, &mut slow, ld);
            assert_eq!(fast, slow, "{p:?}");
        }
        let strided = ConvParams {
            stride: 2,
            ..params((8, 8), (3, 3), 1, 1)
        };
        assert!(SameShift::new(&strided).is_none());
    }
}
