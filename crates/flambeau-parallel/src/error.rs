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

    /// No devices were given.
    #[error("data parallelism needs at least one device")]
    NoDevices,

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
