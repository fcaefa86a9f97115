//! [`Launch`]: how this process was started — alone, by `mpirun`, or by `torchrun` — read from
//! its environment, and [`Launch::join`]: this process's [`ProcessGroup`] in that run.
//!
//! Gradients move between processes through an existing engine, each behind a cargo feature:
//! MPI under mpirun (feature `mpi`, CPU clusters), NCCL under torchrun (feature `nccl`, one
//! process per GPU, `LOCAL_RANK` choosing it; the NCCL id travels through PyTorch's TCPStore).

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
    /// torchrun's. A launch of one process is [`Launch::Alone`].
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
                return Ok(if world > 1 {
                    Launch::Mpi {
                        rank,
                        world,
                        local_rank,
                    }
                } else {
                    Launch::Alone
                });
            }
        }
        Ok(match LaunchEnv::from_env()? {
            Some(env) if env.world_size > 1 => Launch::Torchrun(env),
            _ => Launch::Alone,
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
    pub fn join(&self, vars: &VarStore, timeout: Duration) -> Result<Option<ProcessGroup>> {
        let (rank, world) = self.rank_and_world();
        let no_transport = |reason: String| Error::NoTransport {
            launcher: self.launcher(),
            rank,
            world,
            reason,
        };
        match self {
            Launch::Alone => Ok(None),
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
        (_, true) => Ok(Device::new_cuda(launch.local_rank())?),
    }
}

#[cfg(feature = "mpi")]
fn mpi_group(vars: &VarStore) -> Result<Option<ProcessGroup>> {
    let collective = crate::collective::MpiCollective::from_world()?;
    Ok(Some(ProcessGroup::new(vars, Box::new(collective))))
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
    let collective =
        crate::collective::NcclCollective::from_rank(vars.device(), env.rank, env.world_size, id)?;
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
