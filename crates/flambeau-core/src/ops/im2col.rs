//! im2col / col2im for one image and one channel group.
//!
//! `cols` is `[C·kh·kw, oh·ow]` row-major with row stride `ld` (`oh·ow` for one image; the
//! batched convolution puts all images side by side, `ld = N·oh·ow`): row `(c, ky, kx)` holds,
//! for every output position, the input pixel that kernel tap sees (zero in the padding).

use super::conv2d::ConvParams;
use super::gemm::Float;

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

/// Fills `cols` from `x` (`[C, H, W]` contiguous).
pub fn im2col<T: Float>(x: &[T], channels: usize, p: &ConvParams, cols: &mut [T], ld: usize) {
    let (h, w, oh, ow) = (p.h, p.w, p.oh, p.ow);
    let l = oh * ow;
    for c in 0..channels {
        let plane = &x[c * h * w..(c + 1) * h * w];
        for ky in 0..p.kh {
            for kx in 0..p.kw {
                let row = (c * p.kh + ky) * p.kw + kx;
                let dst = &mut cols[row * ld..row * ld + l];
                let offset = (kx * p.dilation) as isize - p.padding as isize;
                let valid = valid_range(ow, w, p.stride, offset);
                for oy in 0..oh {
                    let iy = (oy * p.stride + ky * p.dilation) as isize - p.padding as isize;
                    let out_row = &mut dst[oy * ow..(oy + 1) * ow];
                    if iy < 0 || iy >= h as isize || valid.is_empty() {
                        out_row.fill(T::zero());
                        continue;
                    }
                    let src = &plane[iy as usize * w..(iy as usize + 1) * w];
                    out_row[..valid.start].fill(T::zero());
                    out_row[valid.end..].fill(T::zero());
                    let first = (valid.start * p.stride) as isize + offset;
                    let src = &src[first as usize..];
                    let out = &mut out_row[valid.clone()];
                    if p.stride == 1 {
                        out.copy_from_slice(&src[..out.len()]);
                    } else {
                        for (o, v) in out.iter_mut().zip(src.iter().step_by(p.stride)) {
                            *o = *v;
                        }
                    }
                }
            }
        }
    }
}

/// Adds `cols` back into `dx` (`[C, H, W]` contiguous): the adjoint of [`im2col`].
pub fn col2im<T: Float>(cols: &[T], channels: usize, p: &ConvParams, dx: &mut [T], ld: usize) {
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
                        for (d, &v) in dst.iter_mut().step_by(p.stride).zip(vals) {
                            *d += v;
                        }
                    }
                }
            }
        }
    }
}
