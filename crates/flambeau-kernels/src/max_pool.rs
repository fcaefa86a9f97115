//! Max pooling (`F.max_pool2d`) with a real backward pass.
//!
//! candle's own max-pool has no backward when kernel ≠ stride (ResNet's stem is 3×3 stride 2
//! padding 1), so this is a custom op: the forward takes the max of each window (padding counts
//! as -∞, the first maximum wins and NaN propagates, as in PyTorch) and, when a gradient will be
//! needed, keeps each window's arg-max; the backward routes the gradient there (recomputing the
//! arg-max if a second backward pass finds the indices used up). Planes run in parallel.

use std::sync::{Arc, Mutex};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::storage::contiguous;
use crate::{generic_max_pool, generic_window};

/// Hyper-parameters of a 2-D max pooling (PyTorch's `nn.MaxPool2d` arguments).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPool2dConfig {
    /// Window size.
    pub kernel_size: usize,
    /// Step between windows; `None` means `kernel_size` (PyTorch's default).
    pub stride: Option<usize>,
    /// Implicit -∞ padding on each side (at most half the kernel, as PyTorch requires).
    pub padding: usize,
    /// Spacing between window elements.
    pub dilation: usize,
    /// Round the output size up instead of down.
    pub ceil_mode: bool,
}

impl MaxPool2dConfig {
    /// A `kernel_size` window with stride = kernel, no padding.
    pub fn new(kernel_size: usize) -> Self {
        Self {
            kernel_size,
            stride: None,
            padding: 0,
            dilation: 1,
            ceil_mode: false,
        }
    }
}

/// PyTorch's `pooling_output_shape`.
fn output_size(
    input: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    dilation: usize,
    ceil: bool,
) -> candle_core::Result<usize> {
    let span = dilation * (kernel - 1) + 1;
    if input + 2 * pad < span {
        candle_core::bail!(
            "max_pool2d: window of {span} (kernel {kernel}, dilation {dilation}) does not fit an input of {input} with padding {pad}"
        )
    }
    let numer = input + 2 * pad - span;
    let mut out = if ceil {
        numer.div_ceil(stride)
    } else {
        numer / stride
    } + 1;
    // The last window must start inside the input or its left padding.
    if ceil && (out - 1) * stride >= input + pad {
        out -= 1;
    }
    Ok(out)
}

/// Functional max pooling over `[N, C, H, W]`.
pub fn max_pool2d(xs: &Tensor, c: &MaxPool2dConfig) -> candle_core::Result<Tensor> {
    let (_, _, h, w) = xs.dims4()?;
    let stride = c.stride.unwrap_or(c.kernel_size);
    if c.kernel_size == 0 || stride == 0 || c.dilation == 0 {
        candle_core::bail!("max_pool2d: kernel_size, stride and dilation must be positive")
    }
    if 2 * c.padding > c.kernel_size {
        candle_core::bail!(
            "max_pool2d: pad should be at most half of effective kernel size, but got pad={}, kernel_size={}",
            c.padding,
            c.kernel_size
        )
    }
    let oh = output_size(h, c.kernel_size, stride, c.padding, c.dilation, c.ceil_mode)?;
    let ow = output_size(w, c.kernel_size, stride, c.padding, c.dilation, c.ceil_mode)?;
    if !crate::mode::fast_cpu(xs) {
        let window = generic_window::Window {
            kh: c.kernel_size,
            kw: c.kernel_size,
            s: stride,
            p: c.padding,
            d: c.dilation,
            oh,
            ow,
        };
        return generic_max_pool::max_pool2d(xs, window);
    }
    let op = MaxPoolOp {
        geometry: Geometry {
            k: c.kernel_size,
            s: stride,
            p: c.padding,
            d: c.dilation,
            oh,
            ow,
        },
        keep_indices: xs.track_op(),
        indices: Arc::new(Mutex::new(None)),
    };
    match xs.dtype() {
        DType::F32 | DType::F64 => xs.contiguous()?.apply_op1(op),
        dt => xs
            .to_dtype(DType::F32)?
            .contiguous()?
            .apply_op1(op)?
            .to_dtype(dt),
    }
}

/// Whether window element `v` replaces the running maximum `best`: PyTorch's
/// `val > maxval || isnan(val)` (the first maximum wins; NaN propagates).
#[inline(always)]
fn takes<T: num_traits::Float>(v: T, best: T) -> bool {
    (v > best) | v.is_nan()
}

/// `dst[i] = src[i·stride]` (fixed-size chunks, which the compiler vectorises).
fn gather_strided<T: Copy>(dst: &mut [T], src: &[T], stride: usize) {
    let Some((last, head)) = dst.split_last_mut() else {
        return;
    };
    if stride == 1 {
        head.copy_from_slice(&src[..head.len()]);
    } else {
        for (d, s) in head.iter_mut().zip(src.chunks_exact(stride)) {
            *d = s[0];
        }
    }
    *last = src[head.len() * stride];
}

#[derive(Debug, Clone, Copy)]
struct Geometry {
    k: usize,
    s: usize,
    p: usize,
    d: usize,
    oh: usize,
    ow: usize,
}

/// The input indices one output row (or column) pools: `start, start + dilation, …`
/// (`count` of them; the padding left out).
#[derive(Debug, Clone, Copy)]
struct Window {
    start: usize,
    count: usize,
}

impl Geometry {
    fn windows(&self, out: usize, input: usize) -> Vec<Window> {
        (0..out)
            .map(|o| {
                // Tap `t` reads `o·s + t·d - p`, increasing with `t`.
                let first_at_least = |limit: usize| {
                    (0..self.k)
                        .find(|&t| o * self.s + t * self.d >= limit)
                        .unwrap_or(self.k)
                };
                let (lo, hi) = (first_at_least(self.p), first_at_least(self.p + input));
                Window {
                    start: (o * self.s + lo * self.d).saturating_sub(self.p),
                    count: hi.saturating_sub(lo),
                }
            })
            .collect()
    }

    /// Flat index (within the plane) of the maximum of a window: the first maximum in row
    /// order, or the last NaN (PyTorch's rule). The window is not empty.
    #[inline]
    fn argmax<T: num_traits::Float>(
        &self,
        plane: &[T],
        w: usize,
        rows: Window,
        cols: Window,
    ) -> usize {
        let mut best_at = rows.start * w + cols.start;
        let mut best = plane[best_at];
        for r in 0..rows.count {
            let row_at = (rows.start + r * self.d) * w;
            for c in 0..cols.count {
                let at = row_at + cols.start + c * self.d;
                let v = plane[at];
                if takes(v, best) {
                    best = v;
                    best_at = at;
                }
            }
        }
        best_at
    }

    /// The pooled planes, and each output's arg-max within its plane if `keep_indices`.
    fn forward<T: Copy + PartialOrd + Send + Sync + num_traits::Float>(
        &self,
        input: &[T],
        planes: usize,
        h: usize,
        w: usize,
        keep_indices: bool,
    ) -> (Vec<T>, Option<Vec<u32>>) {
        let (oh, ow) = (self.oh, self.ow);
        let (rows, cols) = (self.windows(oh, h), self.windows(ow, w));
        let mut out = vec![T::neg_infinity(); planes * oh * ow];
        let mut indices = vec![0u32; if keep_indices { out.len() } else { 0 }];
        let index_chunk = if keep_indices { oh * ow } else { 0 };
        // Per kernel column: the output columns whose tap lies inside the input, and the
        // offset from `ox·s` to the input column.
        let taps: Vec<(std::ops::Range<usize>, isize)> = (0..self.k)
            .map(|kx| {
                let offset = (kx * self.d) as isize - self.p as isize;
                let mut valid = (0..ow).filter(|&ox| {
                    let ix = (ox * self.s) as isize + offset;
                    ix >= 0 && ix < w as isize
                });
                let lo = valid.clone().next().unwrap_or(0);
                let hi = valid.next_back().map_or(lo, |x| x + 1);
                (lo..hi, offset)
            })
            .collect();
        // A whole output row at a time, window element by window element in PyTorch's order
        // (rows, then columns): branch-free selects over contiguous rows that vectorise.
        let pool = |p: usize, o: &mut [T], idx: &mut [u32]| {
            let plane = &input[p * h * w..(p + 1) * h * w];
            let mut candidates = vec![T::neg_infinity(); ow];
            for (oy, &rw) in rows.iter().enumerate() {
                let best = &mut o[oy * ow..(oy + 1) * ow];
                let mut no_index = [];
                let at: &mut [u32] = if keep_indices {
                    &mut idx[oy * ow..(oy + 1) * ow]
                } else {
                    &mut no_index
                };
                // PyTorch starts from -inf at the window's first element.
                for (a, cw) in at.iter_mut().zip(&cols) {
                    *a = (rw.start * w + cw.start) as u32;
                }
                for r in 0..rw.count {
                    let iy = rw.start + r * self.d;
                    let row = &plane[iy * w..(iy + 1) * w];
                    for (range, offset) in &taps {
                        if range.is_empty() {
                            continue;
                        }
                        let first = (range.start * self.s) as isize + offset;
                        let cand = &mut candidates[range.clone()];
                        gather_strided(cand, &row[first as usize..], self.s);
                        let best = &mut best[range.clone()];
                        if keep_indices {
                            let at = &mut at[range.clone()];
                            let first = (iy * w) as isize + first;
                            for (i, ((b, a), &v)) in best.iter_mut().zip(at).zip(&*cand).enumerate()
                            {
                                let here = (first + (i * self.s) as isize) as u32;
                                let take = takes(v, *b);
                                *b = if take { v } else { *b };
                                *a = if take { here } else { *a };
                            }
                        } else {
                            for (b, &v) in best.iter_mut().zip(&*cand) {
                                *b = if takes(v, *b) { v } else { *b };
                            }
                        }
                    }
                }
            }
        };
        if keep_indices {
            out.par_chunks_mut(oh * ow)
                .zip(indices.par_chunks_mut(index_chunk))
                .enumerate()
                .for_each(|(p, (o, idx))| pool(p, o, idx));
        } else {
            out.par_chunks_mut(oh * ow)
                .enumerate()
                .for_each(|(p, o)| pool(p, o, &mut []));
        }
        (out, keep_indices.then_some(indices))
    }

    /// The input gradient: each output's gradient added at its arg-max (recomputed from the
    /// input when the forward kept no indices).
    fn backward<T: Copy + PartialOrd + Send + Sync + num_traits::Float>(
        &self,
        input: &[T],
        grad: &[T],
        indices: Option<&[u32]>,
        planes: usize,
        h: usize,
        w: usize,
    ) -> Vec<T> {
        let (oh, ow) = (self.oh, self.ow);
        let (rows, cols) = (self.windows(oh, h), self.windows(ow, w));
        let mut gin = vec![T::zero(); planes * h * w];
        gin.par_chunks_mut(h * w).enumerate().for_each(|(p, gi)| {
            let g = &grad[p * oh * ow..(p + 1) * oh * ow];
            if let Some(indices) = indices {
                let idx = &indices[p * oh * ow..(p + 1) * oh * ow];
                for ((o, &g), &i) in g.iter().enumerate().zip(idx) {
                    let (oy, ox) = (o / ow, o % ow);
                    if rows[oy].count > 0 && cols[ox].count > 0 {
                        gi[i as usize] = gi[i as usize] + g;
                    }
                }
                return;
            }
            let plane = &input[p * h * w..(p + 1) * h * w];
            for (&rw, g) in rows.iter().zip(g.chunks(ow)) {
                for (&cw, &g) in cols.iter().zip(g) {
                    if rw.count > 0 && cw.count > 0 {
                        let i = self.argmax(plane, w, rw, cw);
                        gi[i] = gi[i] + g;
                    }
                }
            }
        });
        gin
    }
}

/// The pooling op; in training it keeps each output's arg-max for the backward pass.
struct MaxPoolOp {
    geometry: Geometry,
    keep_indices: bool,
    indices: Arc<Mutex<Option<Vec<u32>>>>,
}

fn contiguous_slice<'a, T>(data: &'a [T], layout: &Layout) -> candle_core::Result<&'a [T]> {
    contiguous(data, layout, "max_pool2d")
}

impl CustomOp1 for MaxPoolOp {
    fn name(&self) -> &'static str {
        "flambeau-max-pool2d"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = layout.shape().dims4()?;
        let g = &self.geometry;
        let shape = Shape::from((n, c, g.oh, g.ow));
        let keep = self.keep_indices && h * w <= u32::MAX as usize;
        let (out, indices) = match storage {
            CpuStorage::F32(v) => {
                let (out, idx) = g.forward(contiguous_slice(v, layout)?, n * c, h, w, keep);
                (CpuStorage::F32(out), idx)
            }
            CpuStorage::F64(v) => {
                let (out, idx) = g.forward(contiguous_slice(v, layout)?, n * c, h, w, keep);
                (CpuStorage::F64(out), idx)
            }
            s => candle_core::bail!("max_pool2d: unsupported dtype {:?}", s.dtype()),
        };
        *self.indices.lock().expect("not poisoned") = indices;
        Ok((out, shape))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let grad = grad_res.contiguous()?;
        let backward = MaxPoolBackward {
            geometry: self.geometry,
            indices: self.indices.lock().expect("not poisoned").take(),
        };
        Ok(Some(arg.apply_op2_no_bwd(&grad, &backward)?))
    }
}

/// `(input, grad_output) → grad_input` for [`MaxPoolOp`].
struct MaxPoolBackward {
    geometry: Geometry,
    indices: Option<Vec<u32>>,
}

impl CustomOp2 for MaxPoolBackward {
    fn name(&self) -> &'static str {
        "flambeau-max-pool2d-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l1.shape().dims4()?;
        let g = &self.geometry;
        let indices = self.indices.as_deref();
        if indices.is_some_and(|i| i.len() != l2.shape().elem_count()) {
            candle_core::bail!("max_pool2d backward: gradient shape does not match the forward")
        }
        let out = match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(d)) => CpuStorage::F32(g.backward(
                contiguous_slice(x, l1)?,
                contiguous_slice(d, l2)?,
                indices,
                n * c,
                h,
                w,
            )),
            (CpuStorage::F64(x), CpuStorage::F64(d)) => CpuStorage::F64(g.backward(
                contiguous_slice(x, l1)?,
                contiguous_slice(d, l2)?,
                indices,
                n * c,
                h,
                w,
            )),
            (a, b) => candle_core::bail!(
                "max_pool2d backward: unsupported dtypes {:?}/{:?}",
                a.dtype(),
                b.dtype()
            ),
        };
        Ok((out, l1.shape().clone()))
    }
}
