//! The errors of data parallelism.

use std::time::Duration;

/// Why a data-parallel operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// Building or loading a replica's state failed.
    #[error(transparent)]
    Core(#[from] flambeau_core::Error),

    /// A device list or a replica layout a run cannot train in (see
    /// [`Placement`](crate::Placement)).
    #[error("{message}")]
    Device {
        /// What is wrong, and the fix.
        message: String,
        /// The underlying failure (opening the GPU, parsing its index), if any.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// No devices were given.
    #[error("data parallelism needs at least one device")]
    NoDevices,

    /// `DataParallel` over several CUDA device entries: its backward moves gradients between
    /// GPU streams through candle's autograd, which orders nothing across streams.
    #[error("DataParallel over {devices} CUDA devices is not supported: candle's backward copies gradients between GPUs without ordering them; train with ReplicaGroup (`flambeau train --device cuda:0,1` or `--replicas N`), which orders every hand-off")]
    UnorderedGpus {
        /// How many of the devices are CUDA devices.
        devices: usize,
    },

    /// A batch cannot be split along a dimension it does not have, or it is empty.
    #[error("cannot scatter a tensor of shape {shape:?} along dimension {dim}: {reason}")]
    Scatter {
        /// The tensor's shape.
        shape: Vec<usize>,
        /// The dimension.
        dim: usize,
        /// What is wrong.
        reason: &'static str,
    },

    /// `gather` was given nothing to gather.
    #[error("gather: no outputs to gather")]
    NothingToGather,

    /// The ranks of a collective passed tensors that do not correspond.
    #[error("collective {op}: rank {rank} passed {got} tensor(s) of shapes {shapes:?}, rank 0 passed {expected} of shapes {expected_shapes:?}")]
    Mismatch {
        /// The collective operation.
        op: &'static str,
        /// The rank that disagrees with rank 0.
        rank: usize,
        /// Its tensor count.
        got: usize,
        /// Its shapes.
        shapes: Vec<Vec<usize>>,
        /// Rank 0's tensor count.
        expected: usize,
        /// Rank 0's shapes.
        expected_shapes: Vec<Vec<usize>>,
    },

    /// A rank failed or left, so every other rank stops too.
    #[error("the replica group was stopped: {0}")]
    Aborted(String),

    /// Some ranks never reached a collective operation.
    #[error("collective {op}: rank(s) {missing:?} of {world} did not join within {}s; the group is stopped", timeout.as_secs())]
    Timeout {
        /// The collective operation.
        op: &'static str,
        /// The ranks that never arrived.
        missing: Vec<usize>,
        /// The group's size.
        world: usize,
        /// How long the others waited.
        timeout: Duration,
    },

    /// A replica's worker thread failed.
    #[error("replica {rank} (on {device}) failed: {message}")]
    Replica {
        /// The replica's rank.
        rank: usize,
        /// Its device.
        device: String,
        /// What went wrong.
        message: String,
    },

    /// The model could not be built on a replica's device.
    #[error("building the replica on {device}: {source}")]
    Build {
        /// The replica's device.
        device: String,
        /// What the model's constructor said.
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// A replica does not have the entries of the model it replicates.
    #[error("the replica on {device} has no `{name}` (its model differs from the base model's)")]
    ReplicaLayout {
        /// The replica's device.
        device: String,
        /// The base model's entry it lacks.
        name: String,
    },

    /// The base model is not on the first device.
    #[error("module must have its parameters and buffers on device {expected} (device_ids[0]) but found one of them on device: {found}")]
    BaseDevice {
        /// The first device.
        expected: String,
        /// Where the base model is.
        found: String,
    },

    /// A rank was asked for a root outside the group.
    #[error("collective {op}: root {root} is not a rank of a group of {world}")]
    BadRoot {
        /// The collective operation.
        op: &'static str,
        /// The root asked for.
        root: usize,
        /// The group's size.
        world: usize,
    },

    /// A launcher's environment variable (torchrun's RANK, WORLD_SIZE, MASTER_ADDR, …) is
    /// missing or malformed.
    #[error("launch environment: {var}={value:?}: {reason}")]
    LaunchEnv {
        /// The variable.
        var: &'static str,
        /// Its value (empty when it is missing).
        value: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The TCPStore at `addr` could not be reached before the timeout.
    #[error("could not connect to the TCPStore at {addr} within {}s{hint}: {last_error}", timeout.as_secs_f64())]
    StoreConnect {
        /// `host:port`.
        addr: String,
        /// How long connecting was retried.
        timeout: Duration,
        /// Who is expected to host the store, as a sentence fragment (may be empty).
        hint: String,
        /// The last connection error.
        last_error: String,
    },

    /// Talking to the TCPStore at `addr` failed (the peer went away, or it broke the protocol).
    #[error("TCPStore at {addr}: {op}: {message}")]
    Store {
        /// `host:port` (or the peer's address, on the server side).
        addr: String,
        /// The operation.
        op: &'static str,
        /// What went wrong.
        message: String,
    },

    /// A TCPStore `wait` or `get` found its keys still missing when the timeout expired.
    #[error("TCPStore at {addr}: {op}: timed out after {}s waiting for key(s) {keys:?}", timeout.as_secs_f64())]
    StoreTimeout {
        /// `host:port`.
        addr: String,
        /// The operation.
        op: &'static str,
        /// The keys waited for.
        keys: Vec<String>,
        /// How long it waited.
        timeout: Duration,
    },

    /// Some ranks of a multi-process launch never reached a rendezvous step.
    #[error("rendezvous at {addr}: {step}: rank(s) {missing:?} of {world} did not join within {}s (joined: {joined:?})", timeout.as_secs_f64())]
    RendezvousTimeout {
        /// The step: `join`, `id read`, ….
        step: &'static str,
        /// The ranks that never arrived.
        missing: Vec<usize>,
        /// The ranks that did.
        joined: Vec<usize>,
        /// WORLD_SIZE.
        world: usize,
        /// The store's `host:port`.
        addr: String,
        /// How long this rank waited.
        timeout: Duration,
    },

    /// A rendezvous step was misused or met a value it cannot use.
    #[error("rendezvous: {0}")]
    Rendezvous(String),

    /// The launcher started several processes, but this build cannot move gradients between
    /// them the way it needs.
    #[error("launched by {launcher} as rank {rank} of {world} processes, but {reason}")]
    NoTransport {
        /// `torchrun` or `mpirun`.
        launcher: &'static str,
        /// This process's rank.
        rank: usize,
        /// The number of processes.
        world: usize,
        /// What is missing and what to do.
        reason: String,
    },

    /// MPI could not be used (feature `mpi`): initialising it, or using it from a wrong thread.
    #[error("MPI: {0}")]
    Mpi(String),

    /// The ranks of an MPI collective called different operations, roots, dtypes or shapes.
    #[error("collective {op}: rank {rank} called {got}, rank 0 called {expected}")]
    MpiMismatch {
        /// The operation this rank called.
        op: &'static str,
        /// A rank that disagrees with rank 0 (this rank's own, if the call was only out of
        /// step).
        rank: usize,
        /// What that rank called, e.g. `all_reduce_sum of 2 tensor(s): f32[3, 4], i64[5]`.
        got: String,
        /// What rank 0 called.
        expected: String,
    },

    /// A collective backend cannot move tensors of this dtype.
    #[error("collective {op}: {backend} cannot move {dtype} tensors")]
    UnsupportedDtype {
        /// The collective operation.
        op: &'static str,
        /// The tensor's dtype.
        dtype: String,
        /// The backend.
        backend: &'static str,
    },

    /// NCCL was asked for a rank on a device that is not a CUDA GPU.
    #[error("the NCCL backend needs CUDA devices, but rank {rank} is on {device}; use the host-staged backend for CPU replicas")]
    NotCuda {
        /// The rank.
        rank: usize,
        /// Its device.
        device: String,
    },

    /// NCCL was asked for two ranks on one GPU, which one communicator cannot hold.
    #[error("NCCL cannot put two ranks on one GPU: ranks {first} and {second} are both on cuda:{ordinal}; list each GPU once (or use the host-staged backend for several replicas on one GPU)")]
    DuplicateGpu {
        /// The GPU's ordinal.
        ordinal: usize,
        /// The first rank on it.
        first: usize,
        /// The next rank on it.
        second: usize,
    },

    /// NCCL's init (`ncclCommInitRankConfig`) did not complete within the init timeout
    /// (`FLAMBEAU_NCCL_INIT_TIMEOUT`): some rank never joined. The communicator was aborted.
    #[error(
        "NCCL init on rank {rank} did not complete within {} s: {}; the communicator was aborted (set {}, in seconds, to wait longer)",
        waited.as_secs_f64(),
        crate::collective::census_text(*world, missing, census_error.as_deref()),
        crate::collective::NCCL_INIT_TIMEOUT_VAR
    )]
    NcclInitTimeout {
        /// The rank that gave up waiting.
        rank: usize,
        /// The group's size.
        world: usize,
        /// How long it waited.
        waited: Duration,
        /// The ranks that had not reached NCCL's init (empty: every rank reached it, or the
        /// census failed — see `census_error`).
        missing: Vec<usize>,
        /// Why the board of who joined could not be read, if it could not (the TCPStore's
        /// host, rank 0, is gone; launched by mpirun).
        census_error: Option<String>,
    },

    /// An NCCL call failed (or did not complete in time).
    #[error("NCCL {op} on rank {rank}: {message}")]
    Nccl {
        /// The operation (`init`, `all_reduce_sum`, …).
        op: &'static str,
        /// The rank that saw the failure.
        rank: usize,
        /// What NCCL or CUDA said.
        message: String,
    },
}

/// The result type of flambeau-parallel.
pub type Result<T> = std::result::Result<T, Error>;
