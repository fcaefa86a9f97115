//! Opening CUDA devices, and handing device tensors between threads and streams in order.
//!
//! Read from candle 0.11.1 and cudarc 0.19.10: `Device::new_cuda` gives every thread CUDA's
//! per-thread default stream, and cudarc orders work across streams only when one context has
//! made several streams of its own, which the per-thread stream never triggers. So a batch
//! uploaded on a loader thread and read on the training thread, or a shard copied to a replica
//! thread, is ordered by nothing. Here every hand-off is ordered explicitly:
//!
//! - [`open_cuda`] opens a GPU with one explicit stream that every thread using that `Device`
//!   shares, turns off cudarc's per-tensor event tracking (dead weight once the hand-offs below
//!   are ordered by hand) and keeps freed memory in CUDA's pool instead of returning it to the
//!   driver at every synchronize.
//! - [`open_stream_like`] opens the same GPU again with a stream, cuBLAS and cuRAND handle of its
//!   own: for a second replica thread on one GPU (a cuBLAS handle must not be used from two
//!   threads at once).
//! - [`transfer`] copies a tensor to another device (only its elements, not the whole storage of
//!   a view) with the destination waiting for the source and the source waiting for the copy,
//!   so that neither a later write nor a free on the source races the copy.
//! - [`Handoff`] carries a value made on one thread to another: an event recorded on the
//!   producer's stream, waited on by the consumer's.
//!
//! On the CPU all of it is the plain operation (work is done when the call returns); the order of
//! the stream operations is one generic function ([`ordered_copy`]), tested on the CPU with a
//! timeline that logs what it is asked to do.

use candle_core::{Device, Result, Tensor};

/// A GPU with one explicit stream shared by every thread that uses the returned `Device` (see the
/// module docs). Use this instead of `Device::new_cuda`.
pub fn open_cuda(ordinal: usize) -> Result<Device> {
    let device = Device::new_cuda_with_stream(ordinal)?;
    prepare(&device)?;
    Ok(device)
}

/// A device on the same hardware as `device` with a queue of its own: on a GPU a new stream with
/// its own cuBLAS and cuRAND handles ([`open_cuda`] of the same ordinal); on the CPU, the CPU.
pub fn open_stream_like(device: &Device) -> Result<Device> {
    match device.location() {
        candle_core::DeviceLocation::Cuda { gpu_id } => open_cuda(gpu_id),
        _ => Ok(device.clone()),
    }
}

/// `t` on `dst`, ordered on both sides (see the module docs). A view is made contiguous on its
/// own device first, so that only its elements cross; on the same device this is `t` itself.
pub fn transfer(t: &Tensor, dst: &Device) -> Result<Tensor> {
    if t.device().same_device(dst) {
        return Ok(t.clone());
    }
    let whole =
        t.is_contiguous() && t.layout().start_offset() == 0 && t.elem_count() == storage_len(t);
    let t = if whole {
        t.clone()
    } else {
        t.force_contiguous()?
    };
    ordered_copy(&Stream::of(t.device()), &Stream::of(dst), || {
        t.to_device(dst)
    })
}

/// The number of elements in `t`'s storage (what `to_device` copies).
fn storage_len(t: &Tensor) -> usize {
    let (storage, _) = t.storage_and_layout();
    match &*storage {
        candle_core::Storage::Cpu(s) => cpu_len(s),
        #[cfg(feature = "cuda")]
        candle_core::Storage::Cuda(s) => {
            use candle_core::backend::BackendStorage;
            cuda_len(s, s.dtype())
        }
        // Unknown backends: assume the worst, a view, and copy the elements out first.
        #[allow(unreachable_patterns)]
        _ => usize::MAX,
    }
}

fn cpu_len(s: &candle_core::CpuStorage) -> usize {
    use candle_core::CpuStorage as S;
    match s {
        S::U8(v) => v.len(),
        S::U32(v) => v.len(),
        S::I16(v) => v.len(),
        S::I32(v) => v.len(),
        S::I64(v) => v.len(),
        S::BF16(v) => v.len(),
        S::F16(v) => v.len(),
        S::F32(v) => v.len(),
        S::F64(v) => v.len(),
        // The 8-bit float and dummy dtypes: treat as a view (an extra contiguous copy at worst).
        #[allow(unreachable_patterns)]
        _ => usize::MAX,
    }
}

#[cfg(feature = "cuda")]
fn cuda_len(s: &candle_core::CudaStorage, dtype: candle_core::DType) -> usize {
    use candle_core::DType as D;
    let len = match dtype {
        D::U8 => s.as_cuda_slice::<u8>().map(|v| v.len()),
        D::U32 => s.as_cuda_slice::<u32>().map(|v| v.len()),
        D::I64 => s.as_cuda_slice::<i64>().map(|v| v.len()),
        D::BF16 => s.as_cuda_slice::<half::bf16>().map(|v| v.len()),
        D::F16 => s.as_cuda_slice::<half::f16>().map(|v| v.len()),
        D::F32 => s.as_cuda_slice::<f32>().map(|v| v.len()),
        D::F64 => s.as_cuda_slice::<f64>().map(|v| v.len()),
        _ => return usize::MAX,
    };
    len.unwrap_or(usize::MAX)
}

/// A value made on one thread for another, with the producer's device work ordered before the
/// consumer's ([`Handoff::new`] on the producer, [`Handoff::receive`] on the consumer).
pub struct Handoff<T> {
    value: T,
    ready: Mark,
}

impl<T> Handoff<T> {
    /// Wraps `value`, whose device work was queued on `device`'s stream by this thread.
    pub fn new(value: T, device: &Device) -> Result<Self> {
        Ok(Self {
            value,
            ready: Stream::of(device).mark()?,
        })
    }

    /// The value, once work this thread queues on `device` waits for the producer's.
    pub fn receive(self, device: &Device) -> Result<T> {
        Stream::of(device).wait_for(&self.ready)?;
        Ok(self.value)
    }
}

/// The queue work is ordered on: a point in it can be marked, and later work can wait for a mark
/// (possibly one of another queue).
pub(crate) trait Timeline {
    type Mark;
    /// A mark after the work queued so far.
    fn mark(&self) -> Result<Self::Mark>;
    /// Work queued from now on starts after `mark`.
    fn wait_for(&self, mark: &Self::Mark) -> Result<()>;
}

/// `copy` (queued on `dst`) ordered after the work queued on `src`, and later work on `src`
/// ordered after the copy: the source may then be overwritten or freed at once.
pub(crate) fn ordered_copy<S, D, T>(src: &S, dst: &D, copy: impl FnOnce() -> Result<T>) -> Result<T>
where
    S: Timeline,
    D: Timeline<Mark = S::Mark>,
{
    dst.wait_for(&src.mark()?)?;
    let out = copy()?;
    src.wait_for(&dst.mark()?)?;
    Ok(out)
}

/// A device's queue: none on the CPU (work is done when the call returns), a CUDA stream on a GPU.
enum Stream {
    Host,
    #[cfg(feature = "cuda")]
    Cuda(std::sync::Arc<candle_core::cuda::cudarc::driver::CudaStream>),
}

/// A point in a [`Stream`].
enum Mark {
    Host,
    #[cfg(feature = "cuda")]
    Cuda(candle_core::cuda::cudarc::driver::CudaEvent),
}

impl Stream {
    fn of(device: &Device) -> Self {
        match device {
            #[cfg(feature = "cuda")]
            Device::Cuda(d) => Stream::Cuda(d.cuda_stream()),
            _ => Stream::Host,
        }
    }
}

impl Timeline for Stream {
    type Mark = Mark;

    fn mark(&self) -> Result<Mark> {
        match self {
            Stream::Host => Ok(Mark::Host),
            #[cfg(feature = "cuda")]
            Stream::Cuda(s) => {
                use candle_core::cuda::cudarc::driver::sys::CUevent_flags;
                let event = s
                    .record_event(Some(CUevent_flags::CU_EVENT_DISABLE_TIMING))
                    .map_err(candle_core::Error::wrap)?;
                Ok(Mark::Cuda(event))
            }
        }
    }

    fn wait_for(&self, mark: &Mark) -> Result<()> {
        match (self, mark) {
            #[cfg(feature = "cuda")]
            (Stream::Cuda(s), Mark::Cuda(event)) => s.wait(event).map_err(candle_core::Error::wrap),
            // A host mark is already reached; a host queue waits by the synchronous copy itself
            // (a device-to-host copy synchronizes the device's stream before it returns).
            _ => Ok(()),
        }
    }
}

/// What [`open_cuda`] sets up on a fresh CUDA device; nothing elsewhere.
fn prepare(device: &Device) -> Result<()> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = device {
        // SAFETY: every hand-off of a tensor between streams goes through `transfer` or
        // `Handoff`, which order the streams both ways; a stream only frees what it allocated.
        unsafe { d.disable_event_tracking() };
        crate::cuda_memory::keep_freed_memory(d)?;
    }
    let _ = device;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use candle_core::{DType, IndexOp};

    use super::*;

    /// A timeline that logs what it is asked to do.
    struct Logged<'a> {
        name: &'static str,
        log: &'a RefCell<Vec<String>>,
    }

    impl Timeline for Logged<'_> {
        type Mark = String;
        fn mark(&self) -> Result<String> {
            let mark = format!("{}#{}", self.name, self.log.borrow().len());
            self.log
                .borrow_mut()
                .push(format!("{} records {mark}", self.name));
            Ok(mark)
        }
        fn wait_for(&self, mark: &String) -> Result<()> {
            self.log
                .borrow_mut()
                .push(format!("{} waits {mark}", self.name));
            Ok(())
        }
    }

    /// A source and a destination timeline logging into `log`.
    fn two_streams(log: &RefCell<Vec<String>>) -> (Logged<'_>, Logged<'_>) {
        let named = |name| Logged { name, log };
        (named("src"), named("dst"))
    }

    #[test]
    fn a_copy_waits_for_its_source_and_the_source_for_the_copy() {
        let log = RefCell::new(Vec::new());
        let (src, dst) = two_streams(&log);
        let out = ordered_copy(&src, &dst, || {
            log.borrow_mut().push("dst copies".into());
            Ok(7)
        })
        .unwrap();
        assert_eq!(out, 7);
        assert_eq!(
            log.into_inner(),
            [
                "src records src#0",
                "dst waits src#0",
                "dst copies",
                "dst records dst#3",
                "src waits dst#3",
            ]
        );
    }

    #[test]
    fn a_failed_copy_queues_nothing_after_it() {
        let log = RefCell::new(Vec::new());
        let (src, dst) = two_streams(&log);
        let out: Result<()> = ordered_copy(&src, &dst, || candle_core::bail!("no memory"));
        assert!(out.is_err());
        assert_eq!(log.into_inner().len(), 2);
    }

    #[test]
    fn transfer_of_a_view_carries_its_elements_only() {
        let t = Tensor::arange(0f32, 24.0, &Device::Cpu)
            .unwrap()
            .reshape((4, 6))
            .unwrap();
        let view = t.narrow(0, 1, 2).unwrap().i((.., 2..5)).unwrap();
        assert!(storage_len(&view) == 24);
        let out = transfer(&view, &Device::Cpu).unwrap();
        assert_eq!(
            out.to_vec2::<f32>().unwrap(),
            [[8.0, 9.0, 10.0], [14.0, 15.0, 16.0]]
        );
        assert_eq!(out.dtype(), DType::F32);
    }

    #[test]
    fn a_whole_storage_is_recognised() {
        let t = Tensor::zeros((3, 5), DType::F64, &Device::Cpu).unwrap();
        assert_eq!(storage_len(&t), 15);
        assert_eq!(storage_len(&t.narrow(0, 1, 1).unwrap()), 15);
    }

    #[test]
    fn a_handoff_on_the_cpu_is_the_value() {
        let h = Handoff::new(vec![1, 2, 3], &Device::Cpu).unwrap();
        let v = std::thread::spawn(move || h.receive(&Device::Cpu).unwrap())
            .join()
            .unwrap();
        assert_eq!(v, [1, 2, 3]);
        assert!(open_stream_like(&Device::Cpu).unwrap().is_cpu());
    }
}
