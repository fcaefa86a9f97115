//! im2col / col2im for one image and one channel group.
//!
//! `cols` is `[C·kh·kw, oh·ow]` row-major with row stride `ld` (`oh·ow` for one image; the
//! batched convolution puts all images side by side, `ld = N·oh·ow`): row `(c, ky, kx)` holds,
//! for every output position, the input pixel that kernel tap sees (zero in the padding).

use super::conv2d::ConvParams;
use super::gemm::Float;

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
                for oy in 0..oh {
                    let iy = (oy * p.stride + ky * p.dilation) as isize - p.padding as isize;
                    let out_row = &mut dst[oy * ow..(oy + 1) * ow];
                    if iy < 0 || iy >= h as isize {
                        out_row.fill(T::zero());
                        continue;
                    }
                    let src = &plane[iy as usize * w..(iy as usize + 1) * w];
                    for (ox, o) in out_row.iter_mut().enumerate() {
                        let ix = (ox * p.stride + kx * p.dilation) as isize - p.padding as isize;
                        *o = if ix >= 0 && ix < w as isize {
                            src[ix as usize]
                        } else {
                            T::zero()
                        };
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
                for oy in 0..oh {
                    let iy = (oy * p.stride + ky * p.dilation) as isize - p.padding as isize;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    let dst = &mut plane[iy as usize * w..(iy as usize + 1) * w];
                    for (ox, &v) in src[oy * ow..(oy + 1) * ow].iter().enumerate() {
                        let ix = (ox * p.stride + kx * p.dilation) as isize - p.padding as isize;
                        if ix >= 0 && ix < w as isize {
                            dst[ix as usize] += v;
                        }
                    }
                }
            }
        }
    }
}
