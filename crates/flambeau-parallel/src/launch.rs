//! [`Launch`]: how this process was started — alone, by `mpirun`, or by `torchrun` — read from
//! its environment, and [`Launch::join`]: this process's [`ProcessGroup`] in that run.
//!
//! Gradients move between processes through an existing engine, each behind a cargo feature:
//! MPI under mpirun (feature `mpi`, CPU clusters), NCCL under torchrun (feature `nccl`, one
//! process per GPU, `LOCAL_RANK` choosing it; the NCCL id travels through PyTorch's TCPStore),
//! and NCCL under mpirun on GPUs when both features are built (the id broadcast over MPI).

use std::time::Duration;

use candle_core::Device;
use flambeau_core::VarStore;

use crate::rendezvous::LaunchEnv;
use crate::{Error, ProcessGroup, Result};

/// The variables MPI launchers set for each rank: (rank, size, local rank) per implementation.
const MPI_VARS: [(&str, &str, &str); 2] = [
    (
        "OMPI_COMM_WORLD_RANK",
        "OMPI_COMM_WORLD_SIZE",
        "OMPI_COMM_WORLD_LOCAL_RANK",
    ),
    ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),
];

/// How this process was started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Launch {
    /// Alone, or as the only process of a launch.
    Alone,
    /// By `mpirun` / `mpiexec` (rank and size as the launcher's variables say).
    Mpi {
        /// This process's rank.
        rank: usize,
        /// The number of processes.
        world: usize,
        /// The rank on this node, when the launcher says.
        local_rank: Option<usize>,
    },
    /// By `torchrun` (or anything that sets its variables).
    Torchrun(LaunchEnv),
}

impl Launch {
    /// Reads the process environment: MPI's variables first (mpirun sets no `RANK`), then
    /// torchrun's. A launch of one process is still a launch: [`Launch::join`] decides whether
    /// it needs a transport.
    pub fn detect() -> Result<Self> {
        let var = |name: &str| std::env::var(name).ok();
        for (rank, size, local) in MPI_VARS {
            if let (Some(r), Some(w)) = (var(rank), var(size)) {
                let parse = |name: &'static str, v: &str| {
                    v.trim().parse::<usize>().map_err(|_| Error::LaunchEnv {
                        var: name,
                        value: v.to_string(),
                        reason: "expected a whole number".into(),
                    })
                };
                let (rank, world) = (parse(rank, &r)?, parse(size, &w)?);
                let local_rank = var(local).and_then(|v| v.trim().parse().ok());
                return Ok(Launch::Mpi {
                    rank,
                    world,
                    local_rank,
                });
            }
        }
        Ok(match LaunchEnv::from_env()? {
            Some(env) => Launch::Torchrun(env),
            None => Launch::Alone,
        })
    }

    /// `(rank, world size)`; `(0, 1)` alone.
    pub fn rank_and_world(&self) -> (usize, usize) {
        match self {
            Launch::Alone => (0, 1),
            Launch::Mpi { rank, world, .. } => (*rank, *world),
            Launch::Torchrun(env) => (env.rank, env.world_size),
        }
    }

    /// The rank on this node: the GPU a process of a one-process-per-GPU launch uses.
    pub fn local_rank(&self) -> usize {
        match self {
            Launch::Alone => 0,
            Launch::Mpi {
                local_rank, rank, ..
            } => local_rank.unwrap_or(*rank),
            Launch::Torchrun(env) => env.local_rank,
        }
    }

    /// The launcher's name.
    pub fn launcher(&self) -> &'static str {
        match self {
            Launch::Alone => "nothing",
            Launch::Mpi { .. } => "mpirun",
            Launch::Torchrun(_) => "torchrun",
        }
    }

    /// This process's rank of the launch, meeting the others through the launcher's transport,
    /// training the model whose parameters are in `vars` (on this process's device); `None`
    /// when alone. Ranks that do not arrive within `timeout` are named in the error.
    ///
    /// A launch of one process joins a group of one only where that tests something — NCCL on
    /// a GPU (torchrun), MPI (mpirun) when built in — and is otherwise alone.
    pub fn join(&self, vars: &VarStore, timeout: Duration) -> Result<Option<ProcessGroup>> {
        let (rank, world) = self.rank_and_world();
        let no_transport = |reason: String| Error::NoTransport {
            launcher: self.launcher(),
            rank,
            world,
            reason,
        };
        let single = world == 1;
        match self {
            Launch::Alone => Ok(None),
            Launch::Mpi { .. } if single && !cfg!(feature = "mpi") => Ok(None),
            Launch::Torchrun(_)
                if single && !(cfg!(feature = "nccl") && vars.device().is_cuda()) =>
            {
                Ok(None)
            }
            Launch::Mpi { .. } => mpi_group(vars).map_err(|e| match e {
                Error::NoTransport { reason, .. } => no_transport(reason),
                e => e,
            }),
            Launch::Torchrun(env) => {
                if !vars.device().is_cuda() {
                    return Err(no_transport(
                        "flambeau moves gradients between torchrun's processes with NCCL, which needs GPUs (--device cuda); on CPUs launch with `mpirun -np N flambeau train …` built with `--features mpi`".into(),
                    ));
                }
                nccl_group(env, vars, timeout).map_err(|e| match e {
                    Error::NoTransport { reason, .. } => no_transport(reason),
                    e => e,
                })
            }
        }
    }
}

/// The device a process of this launch trains on, given the one asked for: under a launcher,
/// a CUDA request means `cuda:LOCAL_RANK` (one process per GPU).
pub fn process_device(launch: &Launch, requested: &Device) -> Result<Device> {
    match (launch, requested.is_cuda()) {
        (Launch::Alone, _) | (_, false) => Ok(requested.clone()),
        (_, true) => Ok(flambeau_kernels::device::open_cuda(launch.local_rank())?),
    }
}

#[cfg(feature = "mpi")]
fn mpi_group(vars: &VarStore) -> Result<Option<ProcessGroup>> {
    let mpi = crate::collective::MpiCollective::from_world()?;
    #[cfg(feature = "nccl")]
    if vars.device().is_cuda() {
        let nccl = nccl_over_mpi::join(mpi, vars.device())?;
        return Ok(Some(ProcessGroup::new(vars, Box::new(nccl))));
    }
    Ok(Some(ProcessGroup::new(vars, Box::new(mpi))))
}

/// Under mpirun on GPUs: NCCL moves the tensors, its unique id broadcast over MPI (as
/// ProcessGroupNCCL broadcasts it over a store), and MPI stays up until NCCL is done.
#[cfg(all(feature = "mpi", feature = "nccl"))]
mod nccl_over_mpi {
    use candle_core::{Device, Tensor};

    use crate::collective::{Collective, MpiCollective, NcclCollective};
    use crate::{Error, Result};

    /// NCCL for every operation; the MPI handle kept for the process (dropped after NCCL).
    pub struct NcclOverMpi {
        nccl: NcclCollective,
        mpi: MpiCollective,
    }

    /// This rank's NCCL communicator, created with rank 0's id received over `mpi`.
    pub fn join(mut mpi: MpiCollective, device: &Device) -> Result<NcclOverMpi> {
        let (rank, world) = (mpi.rank(), mpi.world_size());
        let id = match rank {
            0 => NcclCollective::unique_id()?,
            _ => [0u8; 128],
        };
        let sent = Tensor::from_vec(id.to_vec(), 128, &Device::Cpu)?;
        let got: Vec<u8> = mpi.broadcast(&[sent], 0)?[0].to_vec1()?;
        let id: [u8; 128] = got.try_into().map_err(|_| {
            Error::Rendezvous("the NCCL id broadcast over MPI is not 128 bytes".into())
        })?;
        let nccl = NcclCollective::from_rank(device, rank, world, id)?;
        Ok(NcclOverMpi { nccl, mpi })
    }

    impl Collective for NcclOverMpi {
        fn rank(&self) -> usize {
            self.nccl.rank()
        }

        fn world_size(&self) -> usize {
            self.nccl.world_size()
        }

        fn all_reduce_sum(&mut self, tensors: &[Tensor]) -> Result<Vec<Tensor>> {
            self.nccl.all_reduce_sum(tensors)
        }

        fn reduce_sum(&mut self, tensors: &[Tensor], root: usize) -> Result<Option<Vec<Tensor>>> {
            self.nccl.reduce_sum(tensors, root)
        }

        fn broadcast(&mut self, tensors: &[Tensor], root: usize) -> Result<Vec<Tensor>> {
            self.nccl.broadcast(tensors, root)
        }

        fn abort(&self, reason: &str) {
            self.nccl.abort(reason);
            self.mpi.abort(reason);
        }
    }
}

#[cfg(not(feature = "mpi"))]
fn mpi_group(_vars: &VarStore) -> Result<Option<ProcessGroup>> {
    Err(Error::NoTransport {
        launcher: "mpirun",
        rank: 0,
        world: 0,
        reason: "this flambeau is built without MPI: build it with `--features mpi` (after `cargo xtask mpi setup`)".into(),
    })
}

#[cfg(feature = "nccl")]
fn nccl_group(env: &LaunchEnv, vars: &VarStore, timeout: Duration) -> Result<Option<ProcessGroup>> {
    let mut rendezvous = crate::rendezvous::Rendezvous::join(env, timeout)?;
    let id = (env.rank == 0)
        .then(crate::collective::NcclCollective::unique_id)
        .transpose()?;
    let id = rendezvous.exchange_id("nccl", id)?;
    // Each rank marks itself in the store before NCCL's init, so that a rank whose init times
    // out (FLAMBEAU_NCCL_INIT_TIMEOUT, else `timeout`) names the ranks that never got there.
    let collective = crate::collective::NcclCollective::from_rank_with(
        vars.device(),
        env.rank,
        env.world_size,
        id,
        &mut rendezvous.nccl_board("nccl"),
        timeout,
    )?;
    Ok(Some(ProcessGroup::new(vars, Box::new(collective))))
}

#[cfg(not(feature = "nccl"))]
fn nccl_group(
    _env: &LaunchEnv,
    _vars: &VarStore,
    _timeout: Duration,
) -> Result<Option<ProcessGroup>> {
    Err(Error::NoTransport {
        launcher: "torchrun",
        rank: 0,
        world: 0,
        reason: "this flambeau is built without NCCL: build it with `--features nccl` (CUDA), or launch with mpirun and `--features mpi`".into(),
    })
}
