//! [`NcclCollective`]: ranks on distinct CUDA GPUs of this process that reduce and broadcast
//! through NCCL (cudarc's bindings), GPU to GPU, without staging on the host.
//!
//! A communicator (`ncclComm_t`) belongs to the thread that drives its GPU. So a group is made in
//! two steps: [`NcclCollective::group`] checks the devices and draws the group's unique id on the
//! calling thread, and returns one [`NcclRank`] per rank — plain data, [`Send`] — which each
//! thread turns into its communicator with [`NcclRank::join`]. `join` waits until every rank of
//! the group has called it, so the ranks must join from different threads.
//!
//! Joining never hangs: the communicator is non-blocking (`ncclCommInitRankConfig` with
//! `blocking = 0`), and the rank polls `ncclCommGetAsyncError` until the init is done, another
//! rank of the process stopped the group, or the init timeout passed
//! ([`crate::collective::nccl_init_timeout`]: `FLAMBEAU_NCCL_INIT_TIMEOUT`, else the group's
//! timeout). On timeout it aborts the communicator and returns
//! [`Error::NcclInitTimeout`], naming the ranks that never reached the init: each rank marks
//! itself on a [`JoinBoard`] first (shared memory for the ranks of one process, the TCPStore
//! under torchrun).
//!
//! Each operation puts the tensors of one dtype into one flat buffer (one NCCL call per dtype,
//! as PyTorch's buckets do), enqueues the call on the rank's CUDA stream — the stream candle's
//! kernels for that device run on, so the call is ordered after the kernels that produced the
//! tensors — and waits for it to complete, watching the group: a rank that fails calls
//! [`Collective::abort`], and the others abort their communicators (`ncclCommAbort`, which ends
//! NCCL kernels waiting for a peer that will never come) instead of hanging. A non-blocking
//! communicator may answer a call with `ncclInProgress` before its kernels are on the stream
//! (NCCL still connecting to a peer): the call is then polled like the init, before anything
//! records an event after it.
//!
//! NCCL cannot check that every rank passes the same shapes: the ranks must pass tensors of the
//! same shapes and dtypes in the same order (as [`crate::ReplicaGroup`] does).

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use candle_core::cuda_backend::cudarc::driver::{
    sys::CUevent_flags, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, DeviceRepr,
};
use candle_core::cuda_backend::cudarc::nccl::{result::NcclError, sys, Id, NcclType};
use candle_core::cuda_backend::{CudaDType, CudaDevice, CudaStorage};
use candle_core::op::BackpropOp;
use candle_core::{DType, Device, DeviceLocation, Storage, Tensor};

use super::host::DEFAULT_TIMEOUT;
use super::nccl_init::{
    init_timeout_error, nccl_init_timeout, wait_for, JoinBoard, LocalBoard, NoBoard, Pace, Poll,
    Waited,
};
use super::{Collective, Op};
use crate::{Error, Result};

/// What the ranks of one group share in this process: why the group was stopped, if it was.
#[derive(Debug, Default)]
struct Shared {
    aborted: Mutex<Option<String>>,
    /// Who of the group has reached NCCL's init (named when the init times out).
    board: LocalBoard,
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
    /// `None` once the group was stopped (dropping a [`RawComm`] calls `ncclCommAbort`).
    comm: Option<RawComm>,
    device: CudaDevice,
    rank: usize,
    world: usize,
    shared: Arc<Shared>,
    timeout: Duration,
}

// SAFETY: `RawComm` is `!Send` because it holds a raw `ncclComm_t`. NCCL allows a communicator
// to be used from any thread as long as calls on it do not overlap; here every call goes through
// `&mut self` (`abort` only touches the shared flag), and the CUDA context is bound to the
// calling thread before each call. [`crate::ReplicaGroup`] goes further: it creates each rank's
// handle on the thread that uses it and never moves it. `Send` is what [`Collective`] asks of
// every backend.
unsafe impl Send for NcclCollective {}

/// The name of an NCCL result code (`ncclUnhandledCudaError`, …).
fn nccl_message(e: NcclError) -> String {
    format!("{:?}", e.0)
}

/// `ncclInvalidUsage: <NCCL's last error message>` for a result of a call on `comm`.
fn describe(comm: sys::ncclComm_t, result: sys::ncclResult_t) -> String {
    // SAFETY: ncclGetLastError takes any communicator (or null) and returns null or a
    // NUL-terminated string owned by NCCL, copied here at once.
    let last = unsafe { sys::ncclGetLastError(comm) };
    let last = (!last.is_null())
        .then(|| {
            unsafe { CStr::from_ptr(last) }
                .to_string_lossy()
                .into_owned()
        })
        .filter(|s| !s.trim().is_empty());
    match last {
        Some(last) => format!("{result:?}: {}", last.trim()),
        None => format!("{result:?}"),
    }
}

/// The `ncclConfig_t` of a non-blocking communicator: `NCCL_CONFIG_INITIALIZER` (every
/// attribute undefined, so NCCL picks its defaults) with `blocking = 0`.
///
/// The struct is cudarc 0.19.10's binding of NCCL 2.30's header (its `nccl` feature is
/// `nccl-02030`); naming every field here makes a change of that layout a compile error. An
/// older libnccl at run time reads it correctly: `ncclCommInitRankConfig` copies
/// `min(config.size, its own sizeof(ncclConfig_t))` bytes over its own initializer and checks
/// `magic`, and `version` only switches fields off for versions older than the field (NCCL's
/// `parseCommConfig`). `NCCL_COMM_BLOCKING=1` in the environment would make it blocking again:
/// then the init cannot time out.
fn non_blocking_config() -> sys::ncclConfig_t {
    const UNDEF_INT: c_int = c_int::MIN; // NCCL_CONFIG_UNDEF_INT
    const UNDEF_PTR: *const c_char = std::ptr::null(); // NCCL_CONFIG_UNDEF_PTR
    sys::ncclConfig_t {
        size: std::mem::size_of::<sys::ncclConfig_t>(),
        magic: 0xcafe_beef,
        version: 2 * 10_000 + 30 * 100, // NCCL_VERSION(2, 30, 0): the layout's header
        blocking: 0,
        cgaClusterSize: UNDEF_INT,
        minCTAs: UNDEF_INT,
        maxCTAs: UNDEF_INT,
        netName: UNDEF_PTR,
        splitShare: UNDEF_INT,
        trafficClass: UNDEF_INT,
        commName: UNDEF_PTR,
        collnetEnable: UNDEF_INT,
        CTAPolicy: UNDEF_INT,
        shrinkShare: UNDEF_INT,
        nvlsCTAs: UNDEF_INT,
        nChannelsPerNetPeer: UNDEF_INT,
        nvlinkCentricSched: UNDEF_INT,
        graphUsageMode: UNDEF_INT,
        numRmaCtx: UNDEF_INT,
        maxP2pPeers: UNDEF_INT,
    }
}

/// An NCCL communicator owned here, at cudarc's `sys` level, rather than cudarc's `Comm`:
///
/// - `Comm` can only be made by `ncclCommInitRank` (blocking, no timeout) or
///   `ncclCommInitAll`, and its fields are private, so a communicator created with
///   `ncclCommInitRankConfig` (non-blocking) cannot be wrapped in one;
/// - `Comm::drop` calls `ncclCommAbort(..).expect(..)`: a failed abort panics in `drop`, which
///   during unwinding (a rank failing) aborts the whole process.
///
/// Dropping a `RawComm` aborts the communicator (`ncclCommAbort`, as PyTorch's destructor does:
/// `ncclCommDestroy` may wait for ever for work a dead peer never completes); if the abort
/// fails, the failure is written once to stderr and the handle is forgotten — never a panic.
/// The stream (hence the CUDA context) lives at least as long as the communicator.
#[derive(Debug)]
struct RawComm {
    comm: sys::ncclComm_t,
    rank: usize,
    stream: Arc<CudaStream>,
}

impl RawComm {
    /// What `ncclCommGetAsyncError` says of the communicator's pending work.
    fn state(&self) -> Poll {
        let mut state = sys::ncclResult_t::ncclSuccess;
        // SAFETY: `comm` is a live communicator (not yet aborted) and `state` a valid place.
        let result = unsafe { sys::ncclCommGetAsyncError(self.comm, &mut state) };
        if result != sys::ncclResult_t::ncclSuccess {
            return Poll::Failed(format!(
                "ncclCommGetAsyncError: {}",
                describe(self.comm, result)
            ));
        }
        match state {
            sys::ncclResult_t::ncclSuccess => Poll::Ready,
            sys::ncclResult_t::ncclInProgress => Poll::Pending,
            other => Poll::Failed(describe(self.comm, other)),
        }
    }

    /// `ncclCommAbort`, once; what went wrong, if anything did.
    fn abort(&mut self) -> Option<String> {
        let comm = std::mem::replace(&mut self.comm, std::ptr::null_mut());
        if comm.is_null() {
            return None;
        }
        // The abort frees device resources on the communicator's GPU.
        let bound = self.stream.context().bind_to_thread();
        // SAFETY: `comm` came from ncclCommInitRankConfig and is aborted only here (the field
        // is null afterwards).
        let result = unsafe { sys::ncclCommAbort(comm) };
        match (result, bound) {
            (sys::ncclResult_t::ncclSuccess, _) => None,
            (other, Ok(())) => Some(format!("{other:?}")),
            (other, Err(e)) => Some(format!("{other:?} (binding the CUDA context: {e})")),
        }
    }
}

impl Drop for RawComm {
    fn drop(&mut self) {
        if let Some(failure) = self.abort() {
            eprintln!(
                "flambeau: NCCL rank {}: ncclCommAbort failed ({failure}); the communicator is left to the process's exit",
                self.rank
            );
        }
    }
}

/// Creates rank `rank`'s communicator of a group of `world` with `id` on `stream`'s GPU,
/// waiting at most `timeout` for the others: marks the rank on `board`, starts a non-blocking
/// `ncclCommInitRankConfig`, then polls it (see the module docs).
fn init_comm(
    stream: &Arc<CudaStream>,
    rank: usize,
    world: usize,
    id: &Id,
    timeout: Duration,
    board: &mut dyn JoinBoard,
    stopped: &dyn Fn() -> Option<String>,
) -> Result<RawComm> {
    let failed = |message: String| Error::Nccl {
        op: "init",
        rank,
        message,
    };
    let (Ok(nranks), Ok(myrank)) = (c_int::try_from(world), c_int::try_from(rank)) else {
        return Err(failed(format!(
            "rank {rank} of {world}: too many ranks for NCCL"
        )));
    };
    // ncclCommInitRankConfig takes the GPU from the thread's current context.
    stream
        .context()
        .bind_to_thread()
        .map_err(|e| failed(e.to_string()))?;
    board.mark_joined(rank)?;
    let mut config = non_blocking_config();
    let mut handle: sys::ncclComm_t = std::ptr::null_mut();
    let unique = sys::ncclUniqueId {
        internal: *id.internal(),
    };
    // SAFETY: `handle` and `config` are valid places; NCCL copies the config.
    let started =
        unsafe { sys::ncclCommInitRankConfig(&mut handle, nranks, unique, myrank, &mut config) };
    // From here on, dropping `comm` aborts the communicator (a null handle is skipped).
    let comm = RawComm {
        comm: handle,
        rank,
        stream: stream.clone(),
    };
    match started {
        sys::ncclResult_t::ncclSuccess | sys::ncclResult_t::ncclInProgress => {}
        other => return Err(failed(describe(handle, other))),
    }
    if handle.is_null() {
        return Err(failed(
            "ncclCommInitRankConfig returned no communicator".into(),
        ));
    }
    match wait_for(timeout, Pace::INIT, || comm.state(), stopped) {
        Waited::Ready => Ok(comm),
        Waited::Failed(message) => Err(failed(message)),
        Waited::Stopped(reason) => Err(Error::Aborted(reason)),
        Waited::TimedOut(_) => {
            drop(comm); // ncclCommAbort: NCCL's init thread stops waiting for the others
            Err(init_timeout_error(rank, world, timeout, board))
        }
    }
}

impl NcclCollective {
    /// The ranks of a new group over `devices` (index = rank), to hand one to each thread.
    /// Every device must be a distinct CUDA GPU: NCCL refuses two ranks on one GPU.
    pub fn group(devices: &[Device]) -> Result<Vec<NcclRank>> {
        Self::group_with_timeout(devices, DEFAULT_TIMEOUT)
    }

    /// [`NcclCollective::group`] whose ranks stop the group when an operation has not completed
    /// after `timeout` (a rank that never reached it); joining waits as long, unless
    /// `FLAMBEAU_NCCL_INIT_TIMEOUT` says otherwise.
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

    /// This process's rank of a group of processes, one per GPU, with rank 0's
    /// [`NcclCollective::unique_id`], on `device`; waits until every rank has joined, at most
    /// `FLAMBEAU_NCCL_INIT_TIMEOUT` (10 minutes by default). Who is missing on timeout is not
    /// known (launched by mpirun: MPI already checked that every rank started).
    pub fn from_rank(device: &Device, rank: usize, world: usize, id: [u8; 128]) -> Result<Self> {
        Self::from_rank_with(device, rank, world, id, &mut NoBoard, DEFAULT_TIMEOUT)
    }

    /// [`NcclCollective::from_rank`] whose rank marks itself on `board` (the launch's
    /// TCPStore: [`crate::Rendezvous::nccl_board`]) so that a rank whose init times out names
    /// the ranks that never joined, and whose init waits at most `init_timeout` (the process
    /// group's timeout; `FLAMBEAU_NCCL_INIT_TIMEOUT` overrides it). Operations wait 10
    /// minutes, as those of [`NcclCollective::group`].
    pub fn from_rank_with(
        device: &Device,
        rank: usize,
        world: usize,
        id: [u8; 128],
        board: &mut dyn JoinBoard,
        init_timeout: Duration,
    ) -> Result<Self> {
        check_devices(std::slice::from_ref(device))?;
        NcclRank {
            id: Id::uninit(id.map(|b| b as c_char)),
            rank,
            world,
            device: device.clone(),
            shared: Arc::new(Shared::default()),
            timeout: DEFAULT_TIMEOUT,
        }
        .join_on(board, init_timeout)
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
        let stream = self.device.cuda_stream();
        stream
            .context()
            .bind_to_thread()
            .map_err(|e| self.error(op, e.to_string()))?;
        // SAFETY (the `alloc`): the buffer is uninitialised, and NCCL writes every element of it
        // before anything reads it (the result is read on this stream, after the call).
        let mut out: Option<CudaSlice<T>> = match op {
            Op::Reduce(root) if root != self.rank => None,
            _ => Some(unsafe { self.device.alloc::<T>(n)? }),
        };
        let started = {
            // The pointers' guards record cudarc's read/write events on the stream when they
            // drop: only after the call's kernels are on it (settled below), never before.
            let (send, _send_guard) = src.device_ptr(&stream);
            let (recv, _recv_guard) = match out.as_mut() {
                Some(out) => {
                    let (ptr, guard) = out.device_ptr_mut(&stream);
                    (ptr as *mut c_void, Some(guard))
                }
                None => (std::ptr::null_mut(), None),
            };
            let send = send as *const c_void;
            let (dtype, s) = (T::as_nccl_type(), stream.cu_stream() as sys::cudaStream_t);
            // SAFETY: `send` holds `n` elements of `T` on this rank's GPU and `recv` (where this
            // rank receives) room for `n`; both stay alive until the call has completed (`run`
            // keeps the flat inputs until `wait`, the outputs are returned); `comm` is live.
            let result = unsafe {
                match op {
                    Op::AllReduce => sys::ncclAllReduce(
                        send,
                        recv,
                        n,
                        dtype,
                        sys::ncclRedOp_t::ncclSum,
                        comm.comm,
                        s,
                    ),
                    Op::Reduce(root) => sys::ncclReduce(
                        send,
                        recv,
                        n,
                        dtype,
                        sys::ncclRedOp_t::ncclSum,
                        root as c_int,
                        comm.comm,
                        s,
                    ),
                    Op::Broadcast(root) => {
                        sys::ncclBroadcast(send, recv, n, dtype, root as c_int, comm.comm, s)
                    }
                }
            };
            self.settle(op, result)
        };
        started?;
        Ok(out.map(|slice| {
            let storage = CudaStorage::wrap_cuda_slice(slice, self.device.clone());
            Tensor::from_storage(Storage::Cuda(storage), n, BackpropOp::none(), false)
        }))
    }

    /// After a call on the non-blocking communicator: `ncclInProgress` means its kernels may
    /// not be on the stream yet (NCCL is still connecting), so poll `ncclCommGetAsyncError`
    /// until it is no longer in progress — as NCCL's docs require before any CUDA call that
    /// waits for the stream — within the group's timeout. Any failure stops the group.
    fn settle(&self, op: Op, result: sys::ncclResult_t) -> Result<()> {
        let Some(comm) = self.comm.as_ref() else {
            return Err(Error::Aborted(self.stopped().unwrap_or_default()));
        };
        let outcome = match result {
            sys::ncclResult_t::ncclSuccess => Waited::Ready,
            sys::ncclResult_t::ncclInProgress => {
                wait_for(self.timeout, Pace::OP, || comm.state(), || self.stopped())
            }
            other => Waited::Failed(describe(comm.comm, other)),
        };
        match outcome {
            Waited::Ready => Ok(()),
            Waited::Failed(message) => Err(self.error(op, message)),
            Waited::Stopped(reason) => Err(Error::Aborted(reason)),
            Waited::TimedOut(_) => Err(self.error(op, self.too_late())),
        }
    }

    fn too_late(&self) -> String {
        format!(
            "did not complete within {}s (a rank never reached it); the group is stopped",
            self.timeout.as_secs()
        )
    }

    /// Waits until the calls enqueued on this rank's stream have completed, stopping the group
    /// when another rank stopped it, on a CUDA or NCCL error (`ncclCommGetAsyncError`: a peer
    /// that failed), or after the timeout.
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
        let Some(comm) = self.comm.as_ref() else {
            return Err(Error::Aborted(self.stopped().unwrap_or_default()));
        };
        let outcome = wait_for(
            self.timeout,
            Pace::OP,
            || match event.try_is_complete() {
                Ok(true) => Poll::Ready,
                Ok(false) => match comm.state() {
                    Poll::Ready | Poll::Pending => Poll::Pending,
                    failed => failed,
                },
                Err(e) => Poll::Failed(e.to_string()),
            },
            || self.stopped(),
        );
        let err = match outcome {
            Waited::Ready => return Ok(()),
            Waited::Stopped(reason) => {
                self.comm = None; // ncclCommAbort ends this rank's waiting NCCL kernels
                return Err(Error::Aborted(reason));
            }
            Waited::Failed(message) => self.error(op, message),
            Waited::TimedOut(_) => self.error(op, self.too_late()),
        };
        self.stop(&err.to_string());
        Err(err)
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

    /// Creates this rank's communicator on the calling thread, on the device's stream, waiting
    /// until every rank of the group has joined — at most `FLAMBEAU_NCCL_INIT_TIMEOUT`
    /// seconds, else the group's timeout; then [`Error::NcclInitTimeout`] names the ranks of
    /// the group that never called `join`. A rank whose init fails stops the others' joins.
    pub fn join(self) -> Result<NcclCollective> {
        let mut board = self.shared.board.clone();
        let timeout = self.timeout;
        self.join_on(&mut board, timeout)
    }

    /// `join`, marking this rank on `board`, waiting `FLAMBEAU_NCCL_INIT_TIMEOUT`, else
    /// `init_timeout`.
    fn join_on(self, board: &mut dyn JoinBoard, init_timeout: Duration) -> Result<NcclCollective> {
        let timeout = nccl_init_timeout(init_timeout)?;
        let device = self.device.as_cuda_device()?.clone();
        let stream = device.cuda_stream();
        let stopped = || self.shared.lock().clone();
        let comm = init_comm(
            &stream, self.rank, self.world, &self.id, timeout, board, &stopped,
        )
        .inspect_err(|e| {
            if !matches!(e, Error::Aborted(_)) {
                let mut stopped = self.shared.lock();
                stopped.get_or_insert_with(|| format!("rank {}: {e}", self.rank));
            }
        })?;
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
