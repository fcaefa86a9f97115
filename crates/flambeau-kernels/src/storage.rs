//! Reading the CPU storage handed to a custom op.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, Layout};

/// The elements of a contiguous tensor (`op` names the kernel in the error).
pub(crate) fn contiguous<'a, T>(
    data: &'a [T],
    layout: &Layout,
    op: &str,
) -> candle_core::Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{op}: expected a contiguous tensor"),
    }
}

/// The elements of a contiguous f32 tensor (the fused kernels' only dtype).
pub(crate) fn contiguous_f32<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &str,
) -> candle_core::Result<&'a [f32]> {
    match storage {
        CpuStorage::F32(v) => contiguous(v, layout, op),
        other => candle_core::bail!("{op}: expected f32, got {:?}", other.dtype()),
    }
}
