//! Buffers a kernel overwrites completely, allocated without a zero-filling pass (which costs
//! as much as the im2col copy or the GEMM output write it precedes).

use std::mem::MaybeUninit;

/// `len` uninitialised elements.
pub fn uninit<T>(len: usize) -> Vec<MaybeUninit<T>> {
    let mut v = Vec::with_capacity(len);
    // SAFETY: `MaybeUninit` elements need no initialisation; the capacity is `len`.
    unsafe { v.set_len(len) };
    v
}

/// The vector, once every element has been written.
///
/// # Safety
/// Every element of `v` must be initialised.
pub unsafe fn assume_init<T>(v: Vec<MaybeUninit<T>>) -> Vec<T> {
    let mut v = std::mem::ManuallyDrop::new(v);
    // SAFETY: `MaybeUninit<T>` has the layout of `T`; the caller vouches for initialisation;
    // pointer, length and capacity come from a live vector that is not dropped.
    unsafe { Vec::from_raw_parts(v.as_mut_ptr().cast::<T>(), v.len(), v.capacity()) }
}

/// The slice, once every element has been written.
///
/// # Safety
/// Every element of `s` must be initialised.
pub unsafe fn assume_init_ref<T>(s: &[MaybeUninit<T>]) -> &[T] {
    // SAFETY: same layout; the caller vouches for initialisation.
    unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<T>(), s.len()) }
}
