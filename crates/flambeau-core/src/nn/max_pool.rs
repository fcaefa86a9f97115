//! `nn.MaxPool2d`, with a real backward pass.
//!
//! candle's own max-pool has no backward when kernel ≠ stride (ResNet's stem is 3×3 stride 2
//! padding 1), so this is a custom op: the forward takes the max of each window (padding counts
//! as -∞, the first maximum wins and NaN propagates, as in PyTorch) and the backward recomputes
//! each window's arg-max and routes the gradient there. Planes run in parallel with rayon.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Module, Shape, Tensor};
use rayon::prelude::*;

use crate::ops::storage::contiguous;

/// Hyper-parameters of [`MaxPool2d`].
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

/// 2-D max pooling over `[N, C, H, W]`.
#[derive(Debug, Clone, Copy)]
pub struct MaxPool2d {
    config: MaxPool2dConfig,
}

impl MaxPool2d {
    /// A max-pool layer (it has no parameters).
    pub fn new(config: MaxPool2dConfig) -> Self {
        Self { config }
    }
}

impl Module for MaxPool2d {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        max_pool2d(xs, &self.config)
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

/// Functional max pooling (see [`MaxPool2d`]).
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
    let op = MaxPoolOp {
        k: c.kernel_size,
        s: stride,
        p: c.padding,
        d: c.dilation,
        oh: output_size(h, c.kernel_size, stride, c.padding, c.dilation, c.ceil_mode)?,
        ow: output_size(w, c.kernel_size, stride, c.padding, c.dilation, c.ceil_mode)?,
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

#[derive(Debug, Clone, Copy)]
struct MaxPoolOp {
    k: usize,
    s: usize,
    p: usize,
    d: usize,
    oh: usize,
    ow: usize,
}

/// For each output row (or column), the input rows (columns) its window covers, padding left out.
fn windows(out: usize, input: usize, k: usize, s: usize, p: usize, d: usize) -> Vec<Vec<usize>> {
    (0..out)
        .map(|o| {
            (0..k)
                .map(|t| (o * s + t * d) as isize - p as isize)
                .filter(|&i| i >= 0 && i < input as isize)
                .map(|i| i as usize)
                .collect()
        })
        .collect()
}

impl MaxPoolOp {
    /// The row and column windows of an `h × w` input.
    fn windows(&self, h: usize, w: usize) -> (Vec<Vec<usize>>, Vec<Vec<usize>>) {
        (
            windows(self.oh, h, self.k, self.s, self.p, self.d),
            windows(self.ow, w, self.k, self.s, self.p, self.d),
        )
    }

    /// Flat index (within the plane) of the maximum of the window `rows × cols`: the first
    /// maximum, or the last NaN (PyTorch's rule).
    #[inline]
    fn argmax<T: Copy + PartialOrd>(
        plane: &[T],
        w: usize,
        rows: &[usize],
        cols: &[usize],
    ) -> usize {
        let mut best_at = rows[0] * w + cols[0];
        let mut best = plane[best_at];
        for &iy in rows {
            let row = &plane[iy * w..(iy + 1) * w];
            for &ix in cols {
                let v = row[ix];
                // `v != v` is NaN: PyTorch propagates it.
                #[allow(clippy::eq_op)]
                if v > best || v != v {
                    best = v;
                    best_at = iy * w + ix;
                }
            }
        }
        best_at
    }

    fn forward<T: Copy + PartialOrd + Send + Sync + num_traits::Float>(
        &self,
        input: &[T],
        planes: usize,
        h: usize,
        w: usize,
    ) -> Vec<T> {
        let (oh, ow) = (self.oh, self.ow);
        let (rows, cols) = self.windows(h, w);
        let mut out = vec![T::neg_infinity(); planes * oh * ow];
        out.par_chunks_mut(oh * ow).enumerate().for_each(|(p, o)| {
            let plane = &input[p * h * w..(p + 1) * h * w];
            for (rows, o) in rows.iter().zip(o.chunks_mut(ow)) {
                for (cols, o) in cols.iter().zip(o) {
                    if !rows.is_empty() && !cols.is_empty() {
                        *o = plane[Self::argmax(plane, w, rows, cols)];
                    }
                }
            }
        });
        out
    }

    fn backward<T: Copy + PartialOrd + Send + Sync + num_traits::Float>(
        &self,
        input: &[T],
        grad: &[T],
        planes: usize,
        h: usize,
        w: usize,
    ) -> Vec<T> {
        let (oh, ow) = (self.oh, self.ow);
        let (rows, cols) = self.windows(h, w);
        let mut gin = vec![T::zero(); planes * h * w];
        gin.par_chunks_mut(h * w).enumerate().for_each(|(p, gi)| {
            let plane = &input[p * h * w..(p + 1) * h * w];
            let g = &grad[p * oh * ow..(p + 1) * oh * ow];
            for (rows, g) in rows.iter().zip(g.chunks(ow)) {
                for (cols, &g) in cols.iter().zip(g) {
                    if !rows.is_empty() && !cols.is_empty() {
                        let i = Self::argmax(plane, w, rows, cols);
                        gi[i] = gi[i] + g;
                    }
                }
            }
        });
        gin
    }
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
        let shape = Shape::from((n, c, self.oh, self.ow));
        let out = match storage {
            CpuStorage::F32(v) => {
                CpuStorage::F32(self.forward(contiguous_slice(v, layout)?, n * c, h, w))
            }
            CpuStorage::F64(v) => {
                CpuStorage::F64(self.forward(contiguous_slice(v, layout)?, n * c, h, w))
            }
            s => candle_core::bail!("max_pool2d: unsupported dtype {:?}", s.dtype()),
        };
        Ok((out, shape))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let grad = grad_res.contiguous()?;
        Ok(Some(arg.apply_op2_no_bwd(&grad, &MaxPoolBackward(*self))?))
    }
}

/// `(input, grad_output) → grad_input` for [`MaxPoolOp`].
struct MaxPoolBackward(MaxPoolOp);

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
        let out = match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(g)) => CpuStorage::F32(self.0.backward(
                contiguous_slice(x, l1)?,
                contiguous_slice(g, l2)?,
                n * c,
                h,
                w,
            )),
            (CpuStorage::F64(x), CpuStorage::F64(g)) => CpuStorage::F64(self.0.backward(
                contiguous_slice(x, l1)?,
                contiguous_slice(g, l2)?,
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
