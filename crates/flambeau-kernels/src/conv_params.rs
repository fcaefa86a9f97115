//! [`ConvParams`]: the shapes of one convolution, shared by the direct and batched paths and
//! im2col.

/// Shapes and hyper-parameters of one convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvParams {
    /// Batch size.
    pub n: usize,
    /// Input channels.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub o: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Stride (both directions).
    pub stride: usize,
    /// Zero padding (both directions).
    pub padding: usize,
    /// Dilation (both directions).
    pub dilation: usize,
    /// Channel groups.
    pub groups: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
}

impl ConvParams {
    pub(crate) fn cg(&self) -> usize {
        self.c / self.groups
    }
    pub(crate) fn og(&self) -> usize {
        self.o / self.groups
    }
    /// Rows of the im2col matrix of one group.
    pub(crate) fn kg(&self) -> usize {
        self.cg() * self.kh * self.kw
    }
    /// Output positions per image.
    pub(crate) fn l(&self) -> usize {
        self.oh * self.ow
    }
    /// A 1×1, stride-1, unpadded convolution: the input already is the im2col matrix.
    pub(crate) fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.padding == 0
    }
    /// Images in parallel with single-threaded GEMMs when there are enough of them; otherwise
    /// one image at a time with a multi-threaded GEMM.
    pub(crate) fn gemm_threads(&self) -> usize {
        let threads = rayon::current_num_threads();
        if self.n >= threads {
            1
        } else {
            threads
        }
    }
}
