//! [`NcclCollective`]: ranks on distinct CUDA GPUs of this process that reduce and broadcast
//! through NCCL (cudarc's bindings), GPU to GPU, without staging on the host.
//!
//! A communicator (`ncclComm_t`) belongs to the thread that drives its GPU. So a group is made in
//! two steps: [`NcclCollective::group`] checks the devices and draws the group's unique id on the
//! calling thread, and returns one [`NcclRank`] per rank — plain data, [`Send`] — which each
//! thread turns into its communicator with [`NcclRank::join`]. `join` blocks until every rank of
//! the group has called it (`ncclCommInitRank`), so the ranks must join from different threads.
//!
//! Each operation puts the tensors of one dtype into one flat buffer (one NCCL call per dtype,
//! as PyTorch's buckets do), enqueues the call on the rank's CUDA stream — the stream candle's
//! kernels for that device run on, so the call is ordered after the kernels that produced the
//! tensors — and waits for it to complete, watching the group: a rank that fails calls
//! [`Collective::abort`], and the others abort their communicators (`ncclCommAbort`, which ends
//! NCCL kernels waiting for a peer that will never come) instead of hanging.
//!
//! NCCL cannot check that every rank passes the same shapes: the ranks must pass tensors of the
//! same shapes and dtypes in the same order (as [`crate::ReplicaGroup`] does).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use candle_core::cuda_backend::cudarc::driver::{sys::CUevent_flags, DeviceRepr};
use candle_core::cuda_backend::cudarc::nccl::{result::NcclError, Comm, Id, NcclType, ReduceOp};
use candle_core::cuda_backend::{CudaDType, CudaDevice, CudaStorage};
use candle_core::op::BackpropOp;
use candle_core::{DType, Device, DeviceLocation, Storage, Tensor};

use super::host::DEFAULT_TIMEOUT;
use super::{Collective, Op};
use crate::{Error, Result};

/// What the ranks of one group share in this process: why the group was stopped, if it was.
#[derive(Debug, Default)]
struct Shared {
    aborted: Mutex<Option<String>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Option<String>> {
        self.aborted.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One rank of an NCCL group before it has joined: moved to the thread that will drive the
/// rank's GPU, which calls [`NcclRank::join`].
#[derive(Debug)]
pub struct NcclRank {
    id: Id,
    rank: usize,
    world: usize,
    device: Device,
    shared: Arc<Shared>,
    timeout: Duration,
}

/// One rank's NCCL communicator over the GPUs of a group (see the module docs).
#[derive(Debug)]
pub struct NcclCollective {
    /// `None` once the group was stopped (dropping a `Comm` calls `ncclCommAbort`).
    comm: Option<Comm>,
    device: CudaDevice,
    rank: usize,
    world: usize,
    shared: Arc<Shared>,
    timeout: Duration,
}

// SAFETY: `Comm` is `!Send` because it holds a raw `ncclComm_t`. NCCL allows a communicator to
// be used from any thread as long as calls on it do not overlap; here every call goes through
// `&mut self` (`abort` only touches the shared flag), and the CUDA context is bound to the
// calling thread before each call. [`crate::ReplicaGroup`] goes further: it creates each rank's
// handle on the thread that uses it and never moves it. `Send` is what [`Collective`] asks of
// every backend.
unsafe impl Send for NcclCollective {}

/// The name of an NCCL result code (`ncclUnhandledCudaError`, …).
fn nccl_message(e: NcclError) -> String {
    format!("{:?}", e.0)
}

impl NcclCollective {
    /// The ranks of a new group over `devices` (index = rank), to hand one to each thread.
    /// Every device must be a distinct CUDA GPU: NCCL refuses two ranks on one GPU.
    pub fn group(devices: &[Device]) -> Result<Vec<NcclRank>> {
        Self::group_with_timeout(devices, DEFAULT_TIMEOUT)
    }

    /// [`NcclCollective::group`] whose ranks stop the group when an operation has not completed
    /// after `timeout` (a rank that never reached it).
    pub fn group_with_timeout(devices: &[Device], timeout: Duration) -> Result<Vec<NcclRank>> {
        check_devices(devices)?;
        let id = Id::new().map_err(|e| Error::Nccl {
            op: "init (ncclGetUniqueId)",
            rank: 0,
            message: nccl_message(e),
        })?;
        let shared = Arc::new(Shared::default());
        Ok(devices
            .iter()
            .enumerate()
            .map(|(rank, device)| NcclRank {
                id,
                rank,
                world: devices.len(),
                device: device.clone(),
                shared: shared.clone(),
                timeout,
            })
            .collect())
    }

    /// A new NCCL unique id (`ncclGetUniqueId`): what rank 0 of a multi-process group draws
    /// and hands to the others (through the TCPStore rendezvous under torchrun).
    pub fn unique_id() -> Result<[u8; 128]> {
        let id = Id::new().map_err(|e| Error::Nccl {
            op: "init (ncclGetUniqueId)",
            rank: 0,
            message: nccl_message(e),
        })?;
        Ok(id.internal().map(|c| c as u8))
    }

    /// This process's rank of a group of processes, one per GPU (`ncclCommInitRank` with rank
    /// 0's [`NcclCollective::unique_id`]), on `device`; blocks until every rank has joined.
    pub fn from_rank(device: &Device, rank: usize, world: usize, id: [u8; 128]) -> Result<Self> {
        check_devices(std::slice::from_ref(device))?;
        NcclRank {
            id: Id::uninit(id.map(|b| b as std::ffi::c_char)),
            rank,
            world,
            device: device.clone(),
            shared: Arc::new(Shared::default()),
            timeout: DEFAULT_TIMEOUT,
        }
        .join()
    }

    fn stopped(&self) -> Option<String> {
        self.shared.lock().clone()
    }

    /// Stops this rank's communicator after a failure of the group.
    fn stop(&mut self, reason: &str) {
        self.abort(reason);
        self.comm = None;
    }

    fn error(&self, op: Op, message: impl Into<String>) -> Error {
        Error::Nccl {
            op: op.name(),
            rank: self.rank,
            message: message.into(),
        }
    }

    /// `op` on each tensor, one NCCL call per dtype; `None` where this rank gets no result.
    fn run(&mut self, op: Op, tensors: &[Tensor]) -> Result<Vec<Option<Tensor>>> {
        if let Some(root) = op.root().filter(|&r| r >= self.world) {
            return Err(Error::BadRoot {
                op: op.name(),
                root,
                world: self.world,
            });
        }
        if let Some(reason) = self.stopped() {
            self.comm = None;
            return Err(Error::Aborted(reason));
        }
        let mine = Device::Cuda(self.device.clone());
        if let Some(t) = tensors.iter().find(|t| !t.device().same_device(&mine)) {
            return Err(self.error(
                op,
                format!(
                    "a tensor is on {:?}, not on this rank's GPU {mine:?}",
                    t.device()
                ),
            ));
        }
        let mut dtypes: Vec<DType> = Vec::new();
        for t in tensors {
            if !dtypes.contains(&t.dtype()) {
                dtypes.push(t.dtype());
            }
        }
        let mut out = vec![None; tensors.len()];
        // The flat send buffers stay alive until the calls have completed.
        let mut sent = Vec::with_capacity(dtypes.len());
        for dtype in dtypes {
            let members: Vec<usize> = (0..tensors.len())
                .filter(|&i| tensors[i].dtype() == dtype)
                .collect();
            let parts = members
                .iter()
                .map(|&i| tensors[i].flatten_all())
                .collect::<candle_core::Result<Vec<_>>>()?;
            let flat = match parts.as_slice() {
                [one] => one.contiguous()?,
                _ => Tensor::cat(&parts, 0)?,
            };
            let result = match self.call(op, &flat) {
                Ok(r) => r,
                Err(e) => {
                    self.stop(&e.to_string());
                    return Err(e);
                }
            };
            if let Some(result) = result {
                let mut offset = 0;
                for &i in &members {
                    let n = tensors[i].elem_count();
                    out[i] = Some(result.narrow(0, offset, n)?.reshape(tensors[i].shape())?);
                    offset += n;
                }
            }
            sent.push(flat);
        }
        self.wait(op)?;
        drop(sent);
        Ok(out)
    }

    /// Enqueues `op` on a flat contiguous tensor of any dtype NCCL has.
    fn call(&self, op: Op, flat: &Tensor) -> Result<Option<Tensor>> {
        match flat.dtype() {
            DType::F32 => self.call_typed::<f32>(op, flat),
            DType::F64 => self.call_typed::<f64>(op, flat),
            DType::F16 => self.call_typed::<half::f16>(op, flat),
            DType::BF16 => self.call_typed::<half::bf16>(op, flat),
            DType::I64 => self.call_typed::<i64>(op, flat),
            DType::I32 => self.call_typed::<i32>(op, flat),
            DType::U32 => self.call_typed::<u32>(op, flat),
            DType::U8 => self.call_typed::<u8>(op, flat),
            other => Err(self.error(op, format!("NCCL has no {other:?} type"))),
        }
    }

    fn call_typed<T: CudaDType + NcclType + DeviceRepr>(
        &self,
        op: Op,
        flat: &Tensor,
    ) -> Result<Option<Tensor>> {
        let Some(comm) = self.comm.as_ref() else {
            return Err(Error::Aborted(self.stopped().unwrap_or_default()));
        };
        let (storage, layout) = flat.storage_and_layout();
        let Storage::Cuda(storage) = &*storage else {
            return Err(self.error(op, "the tensor is not in CUDA memory"));
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            return Err(self.error(op, "the flat buffer is not contiguous"));
        };
        let src = storage.as_cuda_slice::<T>()?.slice(start..end);
        let n = end - start;
        let failed = |e: NcclError| self.error(op, nccl_message(e));
        self.device
            .cuda_stream()
            .context()
            .bind_to_thread()
            .map_err(|e| self.error(op, e.to_string()))?;
        // SAFETY (each `alloc`): the buffer is uninitialised, and NCCL writes every element of it
        // before anything reads it (the result is read on this stream, after the call).
        let out = match op {
            Op::AllReduce => {
                let mut out = unsafe { self.device.alloc::<T>(n)? };
                comm.all_reduce(&src, &mut out, &ReduceOp::Sum)
                    .map_err(failed)?;
                Some(out)
            }
            Op::Reduce(root) if root == self.rank => {
                let mut out = unsafe { self.device.alloc::<T>(n)? };
                comm.reduce(&src, Some(&mut out), &ReduceOp::Sum, root as i32)
                    .map_err(failed)?;
                Some(out)
            }
            Op::Reduce(root) => {
                comm.reduce(
                    &src,
                    None::<&mut candle_core::cuda_backend::cudarc::driver::CudaSlice<T>>,
                    &ReduceOp::Sum,
                    root as i32,
                )
                .map_err(failed)?;
                None
            }
            Op::Broadcast(root) => {
                let mut out = unsafe { self.device.alloc::<T>(n)? };
                let send = (root == self.rank).then_some(&src);
                comm.broadcast(send, &mut out, root as i32)
                    .map_err(failed)?;
                Some(out)
            }
        };
        Ok(out.map(|slice| {
            let storage = CudaStorage::wrap_cuda_slice(slice, self.device.clone());
            Tensor::from_storage(Storage::Cuda(storage), n, BackpropOp::none(), false)
        }))
    }

    /// Waits until the calls enqueued on this rank's stream have completed, stopping the group
    /// when another rank stopped it, on a CUDA error, or after the timeout.
    fn wait(&mut self, op: Op) -> Result<()> {
        let stream = self.device.cuda_stream();
        let event = match stream.record_event(Some(CUevent_flags::CU_EVENT_DISABLE_TIMING)) {
            Ok(e) => e,
            Err(e) => {
                let err = self.error(op, e.to_string());
                self.stop(&err.to_string());
                return Err(err);
            }
        };
        let start = Instant::now();
        let mut polls = 0u32;
        loop {
            match event.try_is_complete() {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => {
                    let err = self.error(op, e.to_string());
                    self.stop(&err.to_string());
                    return Err(err);
                }
            }
            if let Some(reason) = self.stopped() {
                self.comm = None; // ncclCommAbort ends this rank's waiting NCCL kernels
                return Err(Error::Aborted(reason));
            }
            if start.elapsed() >= self.timeout {
                let err = self.error(
                    op,
                    format!(
                        "did not complete within {}s (a rank never reached it); the group is stopped",
                        self.timeout.as_secs()
                    ),
                );
                self.stop(&err.to_string());
                return Err(err);
            }
            // Spin briefly (a collective of a training step takes micro- to milliseconds), then
            // poll at a rate that leaves the core to the other ranks' threads.
            polls += 1;
            if polls < 1000 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }
}

/// Every device a CUDA GPU, none twice.
fn check_devices(devices: &[Device]) -> Result<()> {
    if devices.is_empty() {
        return Err(Error::NoDevices);
    }
    let mut seen: Vec<(usize, usize)> = Vec::new(); // (ordinal, first rank on it)
    for (rank, device) in devices.iter().enumerate() {
        let DeviceLocation::Cuda { gpu_id } = device.location() else {
            return Err(Error::NotCuda {
                rank,
                device: format!("{device:?}"),
            });
        };
        if let Some(&(_, first)) = seen.iter().find(|(ordinal, _)| *ordinal == gpu_id) {
            return Err(Error::DuplicateGpu {
                ordinal: gpu_id,
                first,
                second: rank,
            });
        }
        seen.push((gpu_id, rank));
    }
    Ok(())
}

impl NcclRank {
    /// This rank's index in the group.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The rank's device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Creates this rank's communicator on the calling thread (`ncclCommInitRank` on the
    /// device's stream), blocking until every rank of the group has joined.
    pub fn join(self) -> Result<NcclCollective> {
        let init = |message: String| Error::Nccl {
            op: "init",
            rank: self.rank,
            message,
        };
        let device = self.device.as_cuda_device()?.clone();
        let stream = device.cuda_stream();
        // ncclCommInitRank takes the GPU from the thread's current context.
        stream
            .context()
            .bind_to_thread()
            .map_err(|e| init(e.to_string()))?;
        let comm = match Comm::from_rank(stream, self.rank, self.world, self.id) {
            Ok(comm) => comm,
            Err(e) => {
                let mut stopped = self.shared.lock();
                stopped.get_or_insert_with(|| format!("rank {}: NCCL init failed", self.rank));
                return Err(init(nccl_message(e)));
            }
        };
        Ok(NcclCollective {
            comm: Some(comm),
            device,
            rank: self.rank,
            world: self.world,
            shared: self.shared,
            timeout: self.timeout,
        })
    }
}

impl Collective for NcclCollective {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world
    }

    fn all_reduce_sum(&mut self, tensors: &[Tensor]) -> Result<Vec<Tensor>> {
        Ok(self
            .run(Op::AllReduce, tensors)?
            .into_iter()
            .flatten()
            .collect())
    }

    fn reduce_sum(&mut self, tensors: &[Tensor], root: usize) -> Result<Option<Vec<Tensor>>> {
        let out = self.run(Op::Reduce(root), tensors)?;
        Ok((self.rank == root).then(|| out.into_iter().flatten().collect()))
    }

    fn broadcast(&mut self, tensors: &[Tensor], root: usize) -> Result<Vec<Tensor>> {
        Ok(self
            .run(Op::Broadcast(root), tensors)?
            .into_iter()
            .flatten()
            .collect())
    }

    fn abort(&self, reason: &str) {
        let mut stopped = self.shared.lock();
        if stopped.is_none() {
            *stopped = Some(format!("rank {}: {reason}", self.rank));
        }
    }
}

impl Drop for NcclCollective {
    /// A rank that goes away (its thread ended or panicked) must not leave the others waiting.
    fn drop(&mut self) {
        if self.world > 1 {
            self.abort("left the group");
        }
    }
}
