//! Collective operations between the ranks of a replica group, behind one trait so that the
//! training step is the same code whatever moves the bytes: [`HostCollective`] (host-staged,
//! fixed summation order: several CPU replicas, several replicas on one GPU), `NcclCollective`
//! (GPU to GPU through NCCL, one rank per GPU; the `nccl` feature) and `MpiCollective` (between
//! processes under mpirun; the `mpi` feature).
//!
//! Every rank holds its own handle and calls the same operations in the same order, as with
//! NCCL communicators and MPI.

mod host;
#[cfg(feature = "mpi")]
mod mpi;
#[cfg(feature = "nccl")]
mod nccl;
mod nccl_init;

use candle_core::Tensor;

use crate::Result;

pub use host::HostCollective;
#[cfg(feature = "mpi")]
pub use mpi::{launched_by_mpi, mpi_local_rank, MpiCollective, MPI_ABORT_CODE};
#[cfg(feature = "nccl")]
pub use nccl::{NcclCollective, NcclRank};
pub(crate) use nccl_init::census_text;
pub use nccl_init::{nccl_init_timeout, JoinBoard, LocalBoard, NoBoard, NCCL_INIT_TIMEOUT_VAR};

/// An operation of a backend that moves tensors between devices (NCCL, MPI): what their
/// errors and agreement checks name.
#[cfg(any(feature = "mpi", feature = "nccl"))]
#[derive(Clone, Copy, Debug)]
pub(crate) enum Op {
    AllReduce,
    Reduce(usize),
    Broadcast(usize),
}

#[cfg(any(feature = "mpi", feature = "nccl"))]
impl Op {
    /// The [`Collective`] method's name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Op::AllReduce => "all_reduce_sum",
            Op::Reduce(_) => "reduce_sum",
            Op::Broadcast(_) => "broadcast",
        }
    }

    /// The root rank, for the rooted operations.
    #[cfg(feature = "nccl")]
    pub(crate) fn root(self) -> Option<usize> {
        match self {
            Op::AllReduce => None,
            Op::Reduce(root) | Op::Broadcast(root) => Some(root),
        }
    }
}

/// What a rank of a replica group can do with the others.
pub trait Collective: Send {
    /// This handle's rank, `0..world_size()`.
    fn rank(&self) -> usize;

    /// The number of ranks in the group.
    fn world_size(&self) -> usize;

    /// The element-wise sum over ranks of each tensor, on every rank (on the device of this
    /// rank's tensor). Every rank passes tensors of the same shapes and dtypes.
    fn all_reduce_sum(&mut self, tensors: &[Tensor]) -> Result<Vec<Tensor>>;

    /// The element-wise sum over ranks of each tensor, on rank `root` only (`None` elsewhere).
    fn reduce_sum(&mut self, tensors: &[Tensor], root: usize) -> Result<Option<Vec<Tensor>>>;

    /// Rank `root`'s tensors on every rank (on the device of this rank's tensor). The other
    /// ranks pass tensors of the same shapes and dtypes, whose values are not read.
    fn broadcast(&mut self, tensors: &[Tensor], root: usize) -> Result<Vec<Tensor>>;

    /// Stops the group: every rank waiting in, or later entering, an operation gets
    /// [`crate::Error::Aborted`] with `reason`. Called by a rank that fails, so that the others
    /// do not wait for it forever.
    fn abort(&self, reason: &str);
}
