//! The GPU's stream-ordered memory pool (what cudarc allocates from with `cuMemAllocAsync`):
//! keeping freed memory for reuse, and reading how much is in use — PyTorch's caching allocator
//! and `torch.cuda.max_memory_allocated`, as far as CUDA's own pool gives them.

use candle_core::cuda::cudarc::driver::{result, sys};
use candle_core::{CudaDevice, Result};

/// The pool `device` allocates from.
fn pool(device: &CudaDevice) -> Result<sys::CUmemoryPool> {
    let cu_device = device.cuda_stream().context().cu_device();
    // SAFETY: `cu_device` comes from a live context.
    unsafe { result::device::get_mem_pool(cu_device) }.map_err(candle_core::Error::wrap)
}

fn get(device: &CudaDevice, attr: sys::CUmemPool_attribute) -> Result<u64> {
    let mut value = 0u64;
    // SAFETY: the attributes read here are all `cuuint64_t`.
    unsafe {
        result::mem_pool::get_attribute(pool(device)?, attr, (&mut value as *mut u64).cast())
    }
    .map_err(candle_core::Error::wrap)?;
    Ok(value)
}

fn set(device: &CudaDevice, attr: sys::CUmemPool_attribute, mut value: u64) -> Result<()> {
    // SAFETY: the attributes written here are all `cuuint64_t`.
    unsafe { result::mem_pool::set_attribute(pool(device)?, attr, (&mut value as *mut u64).cast()) }
        .map_err(candle_core::Error::wrap)
}

/// Keeps memory freed into the pool instead of returning it to the driver at every synchronize
/// (the pool's default release threshold is 0): a training step then reuses last step's memory
/// without a call into the driver, as PyTorch's caching allocator does.
pub fn keep_freed_memory(device: &CudaDevice) -> Result<()> {
    set(
        device,
        sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
        u64::MAX,
    )
}

/// Bytes of the pool in use by allocations now.
pub fn memory_in_use(device: &CudaDevice) -> Result<u64> {
    get(
        device,
        sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_CURRENT,
    )
}

/// The most bytes in use at once since the pool was created or [`reset_peak_memory`].
pub fn peak_memory(device: &CudaDevice) -> Result<u64> {
    get(
        device,
        sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
    )
}

/// Starts [`peak_memory`] afresh (CUDA only accepts 0 for the high-water marks).
pub fn reset_peak_memory(device: &CudaDevice) -> Result<()> {
    set(
        device,
        sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
        0,
    )
}
