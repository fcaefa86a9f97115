//! Data parallelism with PyTorch's semantics (see ../shared/PARALLEL.md in the repository):
//!
//! - [`scatter`] / [`replicate`] / [`parallel_apply`] / [`gather`]: `nn.parallel`'s four steps —
//!   a batch split as `torch.chunk` splits it, the model built again on each device, the
//!   replicas run concurrently, the outputs concatenated on one device;
//! - [`DataParallel`]: `nn.DataParallel` around any model, with the `module.` keys its
//!   `state_dict()` has in PyTorch;
//! - [`ReplicaGroup`]: data-parallel training with DistributedDataParallel's semantics over
//!   persistent replicas, one worker thread each, whose gradients meet through a
//!   [`Collective`] ([`HostCollective`]: host-staged, fixed summation order; `NcclCollective`
//!   with the `nccl` feature: GPU to GPU, one rank per GPU — see [`Backend`]);
//! - [`Placement`]: where a run's replicas go (`cpu`, `cuda:0,1`, replicas per device), checked;
//! - [`ProcessGroup`]: the same step for one process of a multi-process run (torchrun, mpirun).
//!
//! ```
//! use candle_core::{DType, Device, Module, ModuleT, Tensor};
//! use flambeau_core::{VarBuilder, VarStore};
//! use flambeau_parallel::DataParallel;
//!
//! struct Scale(Tensor);
//! impl ModuleT for Scale {
//!     fn forward_t(&self, x: &Tensor, _train: bool) -> candle_core::Result<Tensor> {
//!         x.broadcast_mul(&self.0)
//!     }
//! }
//! fn build(vb: VarBuilder) -> flambeau_core::Result<Scale> {
//!     Ok(Scale(vb.param("w", 1, flambeau_core::Init::Const(2.0))?))
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let vs = VarStore::new(&Device::Cpu, DType::F32);
//! let model = build(vs.root())?;
//! let dp = DataParallel::new(model, vs, build, &[Device::Cpu, Device::Cpu])?;
//! let y = dp.forward_t(&Tensor::new(&[1f32, 2.0, 3.0], &Device::Cpu)?, false)?;
//! assert_eq!(y.to_vec1::<f32>()?, [2.0, 4.0, 6.0]);
//! assert!(dp.state_dict().contains_key("module.w"));
//! # Ok(()) }
//! ```

mod apply;
mod chunk;
pub mod collective;
mod data_parallel;
mod error;
mod launch;
mod placement;
mod process_group;
mod rank_step;
pub mod rendezvous;
mod replica_group;
mod replicate;

pub use apply::parallel_apply;
pub use chunk::{chunk_sizes, gather, scatter};
pub use collective::{Collective, HostCollective};
#[cfg(feature = "nccl")]
pub use collective::{NcclCollective, NcclRank};
pub use data_parallel::{DataParallel, MODULE_PREFIX};
pub use error::{Error, Result};
pub use launch::{process_device, Launch};
pub use placement::{parse_devices, Placement};
pub use process_group::{ProcessGroup, ProcessStep, STOP_CHECK_SECONDS};
pub use rank_step::ShardLoss;
pub use rendezvous::{LaunchEnv, Rendezvous, StoreClient, StoreServer};
pub use replica_group::{Backend, ReplicaGroup, StepOutput};
pub use replicate::{copy_state, replicate, BuildModel, Replica};

/// Whether this build has the NCCL backend (the `nccl` feature): without it, `Backend::Nccl`
/// does not exist, and a caller asked for one replica per GPU over several GPUs should say which
/// feature to build with.
pub const NCCL_AVAILABLE: bool = cfg!(feature = "nccl");
