//! A safe wrapper over the `gemm` crate (the GEMM candle itself uses) for row-major matrices.

use std::mem::MaybeUninit;

use gemm::Parallelism;

/// Element types the convolution kernels run on.
pub trait Float:
    Copy + Send + Sync + num_traits::Zero + num_traits::One + std::ops::AddAssign + 'static
{
}
impl Float for f32 {}
impl Float for f64 {}

/// A row-major matrix view: `rows × cols`, element `(r, c)` at `data[r * rs + c * cs]`.
#[derive(Clone, Copy)]
pub struct MatRef<'a, T> {
    pub data: &'a [T],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a, T> MatRef<'a, T> {
    /// A contiguous row-major `rows × cols` matrix.
    pub fn new(data: &'a [T], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose (a view, nothing copied).
    pub fn t(self) -> Self {
        Self {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }

    fn max_index(&self) -> usize {
        if self.rows == 0 || self.cols == 0 {
            0
        } else {
            (self.rows - 1) * self.rs + (self.cols - 1) * self.cs + 1
        }
    }
}

/// `dst (m × n, contiguous row-major) = [dst +] a (m × k) · b (k × n)`.
pub fn matmul<T: Float>(
    dst: &mut [T],
    a: MatRef<T>,
    b: MatRef<T>,
    accumulate: bool,
    threads: usize,
) {
    assert!(dst.len() >= a.rows * b.cols);
    // SAFETY: `dst` holds `m × n` initialised elements, borrowed mutably.
    unsafe { gemm_raw(dst.as_mut_ptr(), a, b, accumulate, threads) }
}

/// `dst (m × n, contiguous row-major) = a (m × k) · b (k × n)` into a buffer it writes
/// completely (no need to zero it first).
pub fn matmul_uninit<T: Float>(
    dst: &mut [MaybeUninit<T>],
    a: MatRef<T>,
    b: MatRef<T>,
    threads: usize,
) {
    assert!(dst.len() >= a.rows * b.cols);
    if a.cols == 0 {
        // An empty reduction: the GEMM would not touch `dst`.
        dst[..a.rows * b.cols].fill(MaybeUninit::new(T::zero()));
        return;
    }
    // SAFETY: `dst` holds `m × n` elements, borrowed mutably; without `accumulate` the GEMM
    // only writes them.
    unsafe { gemm_raw(dst.as_mut_ptr().cast::<T>(), a, b, false, threads) }
}

/// # Safety
/// `dst` must point to `a.rows × b.cols` writable elements that nothing else aliases, and be
/// initialised if `accumulate`.
unsafe fn gemm_raw<T: Float>(
    dst: *mut T,
    a: MatRef<T>,
    b: MatRef<T>,
    accumulate: bool,
    threads: usize,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(b.rows == k, "inner dimensions differ");
    assert!(a.data.len() >= a.max_index() && b.data.len() >= b.max_index());
    if m == 0 || n == 0 {
        return;
    }
    let par = if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    // SAFETY: the assertions above keep every index the kernel reads inside `a` and `b`; the
    // caller vouches for `dst`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            if accumulate { T::one() } else { T::zero() },
            T::one(),
            false,
            false,
            false,
            par,
        );
    }
}
