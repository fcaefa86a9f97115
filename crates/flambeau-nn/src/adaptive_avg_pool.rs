//! `nn.AdaptiveAvgPool2d`.

use candle_core::{Module, Tensor};

/// Averages `[N, C, H, W]` into `[N, C, out_h, out_w]` with PyTorch's windows:
/// rows `floor(i·H/out_h) .. ceil((i+1)·H/out_h)`, columns likewise.
#[derive(Debug, Clone, Copy)]
pub struct AdaptiveAvgPool2d {
    out_h: usize,
    out_w: usize,
}

impl AdaptiveAvgPool2d {
    /// Output size `(out_h, out_w)`; ResNet uses `(1, 1)`.
    pub fn new((out_h, out_w): (usize, usize)) -> Self {
        Self { out_h, out_w }
    }
}

fn window(i: usize, input: usize, output: usize) -> (usize, usize) {
    let start = i * input / output;
    let end = ((i + 1) * input).div_ceil(output);
    (start, end - start)
}

impl Module for AdaptiveAvgPool2d {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let (n, c, h, w) = xs.dims4()?;
        let (oh, ow) = (self.out_h, self.out_w);
        if oh == 0 || ow == 0 {
            candle_core::bail!("AdaptiveAvgPool2d: output size must be positive, got ({oh}, {ow})")
        }
        if h % oh == 0 && w % ow == 0 {
            // Equal windows: one reshape and one mean.
            return xs.reshape((n, c, oh, h / oh, ow, w / ow))?.mean(5)?.mean(3);
        }
        let mut rows = Vec::with_capacity(oh);
        for i in 0..oh {
            let (y, hh) = window(i, h, oh);
            let band = xs.narrow(2, y, hh)?;
            let mut cells = Vec::with_capacity(ow);
            for j in 0..ow {
                let (x, ww) = window(j, w, ow);
                cells.push(band.narrow(3, x, ww)?.mean_keepdim(3)?.mean_keepdim(2)?);
            }
            rows.push(Tensor::cat(&cells, 3)?);
        }
        Tensor::cat(&rows, 2)
    }
}
