//! [`MpiCollective`]: ranks in separate processes (launched by `mpirun`, on one machine or many)
//! that reduce and broadcast through the system's MPI library (OpenMPI on Debian:
//! `cargo xtask mpi setup`), via the `mpi` crate (rsmpi). Feature `mpi`.
//!
//! Each operation stages this rank's tensors on the host, packs them into one buffer per
//! transport type (so a step's gradients cost a few MPI calls, not one per tensor), makes one MPI
//! call per buffer, and unpacks the result into new tensors of the original shapes, dtypes and
//! devices.
//!
//! - Sums are MPI's (`MPI_SUM`): their order is OpenMPI's choice of algorithm for the rank count
//!   and message size, so they can differ in the last bits from [`super::HostCollective`]'s rank
//!   order 0, 1, 2, … — but they are the same from run to run with the same rank count and
//!   message sizes on the same MPI build, and OpenMPI's all-reduce gives every rank the same bits
//!   (the tests check this).
//! - `u8`, `u32`, `i16`, `i32`, `i64`, `f32` and `f64` travel as they are; `bf16` and `f16` travel
//!   as `f32` (exact) and sums are rounded back once; other dtypes are refused with
//!   [`Error::UnsupportedDtype`].
//! - Before each operation the ranks check, with one small all-reduce of a fingerprint, that they
//!   call the same operation with the same root, count, dtypes and shapes; when they do not, every
//!   rank gets [`Error::MpiMismatch`] naming a disagreeing rank (instead of MPI reading the wrong
//!   number of bytes), and the group stays usable.
//! - [`MpiCollective::abort`] (and a panic that unwinds through a handle) calls `MPI_Abort`:
//!   `mpirun` then kills every rank of the job and exits nonzero. It does not return.
//!
//! - A rank that drops its handle while the others go on (it returned an error without calling
//!   `abort`) makes their next operation fail with [`Error::Aborted`] naming it; its drop waits
//!   until every rank has dropped its handle, so that all of them reach `MPI_Finalize`.
//!
//! MPI is initialised by the first [`MpiCollective::from_world`] of a process and finalised when
//! the last handle is dropped; MPI cannot be initialised again afterwards, so keep the handle
//! for the whole run. A process that exits without dropping it (`std::process::exit`) skips
//! `MPI_Finalize`, which `mpirun` reports as an error.

use std::sync::{Arc, Mutex, Weak};
use std::thread::ThreadId;

use candle_core::{DType, Device, Tensor, WithDType};
use mpi::collective::{CommunicatorCollectives, Root, SystemOperation};
use mpi::datatype::{Equivalence, PartitionMut};
use mpi::environment::{Threading, Universe};
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::Count;

use super::{Collective, Op};
use crate::{Error, Result};

/// The exit code `MPI_Abort` is called with ([`MpiCollective::abort`]); `mpirun` exits nonzero.
pub const MPI_ABORT_CODE: i32 = 1;

/// Elements per MPI call: MPI counts are C `int`s.
const CHUNK: usize = 1 << 28;

/// Whether this process was started by an MPI launcher (`mpirun`/`mpiexec` of OpenMPI, MPICH or
/// Intel MPI, or a PMIx launcher such as `srun --mpi=pmix`), read from the environment those set
/// (`OMPI_COMM_WORLD_SIZE`, `PMI_SIZE`, `PMIX_RANK`) without initialising MPI. A process started
/// alone is a world of one; a program can use this to choose [`MpiCollective`] before creating it.
pub fn launched_by_mpi() -> bool {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
}

/// This process's rank among the ranks of its machine, as the MPI launcher set it
/// (`OMPI_COMM_WORLD_LOCAL_RANK`, `MPI_LOCALRANKID`, `PMI_LOCAL_RANK`), for choosing a GPU per
/// rank; `None` when no launcher set one. Needs no MPI initialisation.
pub fn mpi_local_rank() -> Option<usize> {
    [
        "OMPI_COMM_WORLD_LOCAL_RANK",
        "MPI_LOCALRANKID",
        "PMI_LOCAL_RANK",
    ]
    .iter()
    .find_map(|v| std::env::var(v).ok()?.trim().parse().ok())
}

/// The process's MPI: the `Universe` (whose drop calls `MPI_Finalize`) when this crate
/// initialised MPI, `None` when something else did (and will finalise it).
struct MpiEnv {
    _universe: Option<Universe>,
    threading: Threading,
    init_thread: ThreadId,
}

/// The live environment, shared by every handle of the process; dead after the last handle.
static ENV: Mutex<Weak<MpiEnv>> = Mutex::new(Weak::new());

/// One process's handle of the MPI world (`MPI_COMM_WORLD`): rank and size as `mpirun` set them.
pub struct MpiCollective {
    env: Arc<MpiEnv>,
    rank: usize,
    world: usize,
}

impl std::fmt::Debug for MpiCollective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MpiCollective")
            .field("rank", &self.rank)
            .field("world", &self.world)
            .field("threading", &self.env.threading)
            .finish()
    }
}

impl Op {
    /// The operation and its root, for the agreement check.
    fn describe(self) -> String {
        match self {
            Op::AllReduce => self.name().to_string(),
            Op::Reduce(root) | Op::Broadcast(root) => format!("{}(root {root})", self.name()),
        }
    }
}

impl MpiCollective {
    /// This process's handle of the MPI world, initialising MPI (asking for
    /// `MPI_THREAD_MULTIPLE`, so that the handle may move between threads) on the first call.
    /// Further calls while a handle lives share it; when MPI was initialised by other code, it is
    /// used as it is (and finalised by that code).
    ///
    /// Fails with [`Error::Mpi`] after MPI was finalised (the last handle was dropped): MPI
    /// cannot be initialised twice in a process.
    pub fn from_world() -> Result<Self> {
        let mut live = ENV.lock().unwrap_or_else(|e| e.into_inner());
        let env = match live.upgrade() {
            Some(env) => env,
            None => {
                if mpi::environment::is_finalized() {
                    return Err(Error::Mpi(
                        "MPI was already finalised in this process (the last MpiCollective was \
                         dropped); MPI cannot be initialised again, so keep one handle for the \
                         whole run"
                            .into(),
                    ));
                }
                let env = match mpi::initialize_with_threading(Threading::Multiple) {
                    Some((universe, threading)) => MpiEnv {
                        _universe: Some(universe),
                        threading,
                        init_thread: std::thread::current().id(),
                    },
                    None => MpiEnv {
                        _universe: None,
                        threading: mpi::environment::threading_support(),
                        init_thread: std::thread::current().id(),
                    },
                };
                let env = Arc::new(env);
                *live = Arc::downgrade(&env);
                env
            }
        };
        drop(live);
        let comm = SimpleCommunicator::world();
        let (rank, world) = (comm.rank(), comm.size());
        Ok(Self {
            env,
            rank: usize::try_from(rank).map_err(|_| Error::Mpi(format!("MPI rank {rank}")))?,
            world: usize::try_from(world).map_err(|_| Error::Mpi(format!("MPI size {world}")))?,
        })
    }

    /// The thread-support level MPI granted (`Multiple` with Debian's OpenMPI). Below
    /// `Serialized`, operations must run on the thread that called [`MpiCollective::from_world`].
    pub fn threading(&self) -> Threading {
        self.env.threading
    }

    /// The communicator of every operation: `MPI_COMM_WORLD`.
    fn comm(&self, op: Op) -> Result<SimpleCommunicator> {
        let serialized_ok = matches!(
            self.env.threading,
            Threading::Serialized | Threading::Multiple
        );
        if !serialized_ok && std::thread::current().id() != self.env.init_thread {
            return Err(Error::Mpi(format!(
                "{}: MPI granted only {:?} thread support, so collectives must run on the thread \
                 that initialised MPI",
                op.name(),
                self.env.threading
            )));
        }
        Ok(SimpleCommunicator::world())
    }

    fn check_root(&self, op: Op) -> Result<()> {
        match op {
            Op::Reduce(root) | Op::Broadcast(root) if root >= self.world => Err(Error::BadRoot {
                op: op.name(),
                root,
                world: self.world,
            }),
            _ => Ok(()),
        }
    }

    /// Runs `op` on `tensors`; `None` on the ranks that receive nothing (reduce, not root).
    fn exchange(&self, op: Op, tensors: &[Tensor]) -> Result<Option<Vec<Tensor>>> {
        self.check_root(op)?;
        for t in tensors {
            if wire_dtype(t.dtype()).is_none() {
                return Err(Error::UnsupportedDtype {
                    op: op.name(),
                    dtype: format!("{:?}", t.dtype()),
                    backend: "MpiCollective",
                });
            }
        }
        let comm = self.comm(op)?;
        // Everything that can fail on one rank alone happens before the first MPI call, so that
        // a failing rank never leaves the others inside an MPI call.
        let mut u8s = self.stage::<u8>(op, tensors)?;
        let mut u32s = self.stage::<u32>(op, tensors)?;
        let mut i16s = self.stage::<i16>(op, tensors)?;
        let mut i32s = self.stage::<i32>(op, tensors)?;
        let mut i64s = self.stage::<i64>(op, tensors)?;
        let mut f32s = self.stage::<f32>(op, tensors)?;
        let mut f64s = self.stage::<f64>(op, tensors)?;
        self.agree(&comm, op, &describe(op, tensors))?;
        let receives = self.transfer(&comm, op, &mut u8s);
        self.transfer(&comm, op, &mut u32s);
        self.transfer(&comm, op, &mut i16s);
        self.transfer(&comm, op, &mut i32s);
        self.transfer(&comm, op, &mut i64s);
        self.transfer(&comm, op, &mut f32s);
        self.transfer(&comm, op, &mut f64s);
        if !receives {
            return Ok(None);
        }
        let mut out: Vec<Option<Tensor>> = vec![None; tensors.len()];
        u8s.unpack(tensors, &mut out)?;
        u32s.unpack(tensors, &mut out)?;
        i16s.unpack(tensors, &mut out)?;
        i32s.unpack(tensors, &mut out)?;
        i64s.unpack(tensors, &mut out)?;
        f32s.unpack(tensors, &mut out)?;
        f64s.unpack(tensors, &mut out)?;
        let out = out
            .into_iter()
            .map(|t| t.ok_or_else(|| Error::Mpi("internal: a tensor was not exchanged".into())))
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(out))
    }

    /// This rank's values of every tensor whose wire type is `T`, concatenated in order (zeros
    /// on the ranks that receive a broadcast: their values are not read).
    fn stage<T: WithDType + Equivalence>(&self, op: Op, tensors: &[Tensor]) -> Result<Staged<T>> {
        let members: Vec<usize> = (0..tensors.len())
            .filter(|&i| wire_dtype(tensors[i].dtype()) == Some(T::DTYPE))
            .collect();
        let total: usize = members.iter().map(|&i| tensors[i].elem_count()).sum();
        let mut data: Vec<T> = Vec::with_capacity(total);
        if matches!(op, Op::Broadcast(root) if root != self.rank) {
            data.resize(total, T::zero());
        } else {
            for &i in &members {
                let flat = tensors[i].flatten_all()?.to_dtype(T::DTYPE)?;
                data.extend(flat.to_vec1::<T>()?);
            }
        }
        Ok(Staged { members, data })
    }

    /// The MPI calls of `op` on one staged buffer, which then holds the result; returns whether
    /// this rank receives one (false on a reduce's other ranks). Every rank agreed on the shapes,
    /// so every rank makes the same calls.
    fn transfer<T: WithDType + Equivalence>(
        &self,
        comm: &SimpleCommunicator,
        op: Op,
        staged: &mut Staged<T>,
    ) -> bool {
        let sum = SystemOperation::sum;
        match op {
            Op::AllReduce => {
                let mut recv = vec![T::zero(); staged.data.len()];
                for (s, r) in staged.data.chunks(CHUNK).zip(recv.chunks_mut(CHUNK)) {
                    comm.all_reduce_into(s, r, sum());
                }
                staged.data = recv;
                true
            }
            Op::Reduce(root) => {
                let process = comm.process_at_rank(root as i32);
                if root == self.rank {
                    let mut recv = vec![T::zero(); staged.data.len()];
                    for (s, r) in staged.data.chunks(CHUNK).zip(recv.chunks_mut(CHUNK)) {
                        process.reduce_into_root(s, r, sum());
                    }
                    staged.data = recv;
                    true
                } else {
                    for s in staged.data.chunks(CHUNK) {
                        process.reduce_into(s, sum());
                    }
                    false
                }
            }
            Op::Broadcast(root) => {
                let process = comm.process_at_rank(root as i32);
                for b in staged.data.chunks_mut(CHUNK) {
                    process.broadcast_into(b);
                }
                true
            }
        }
    }

    /// Fails on every rank, consistently, when the ranks do not call the same operation with the
    /// same root, tensor count, dtypes and shapes, or when a rank has left the group.
    fn agree(&self, comm: &SimpleCommunicator, op: Op, mine: &str) -> Result<()> {
        let Err(all) = self.fingerprints_agree(comm, mine) else {
            return Ok(());
        };
        if let Some(gone) = all.iter().position(|d| d == LEAVE) {
            return Err(Error::Aborted(format!(
                "rank {gone}: left the group (its MpiCollective was dropped)"
            )));
        }
        let rank = (1..self.world)
            .find(|&r| all[r] != all[0])
            .unwrap_or(self.rank);
        Err(Error::MpiMismatch {
            op: op.name(),
            rank,
            got: all[rank].clone(),
            expected: all[0].clone(),
        })
    }

    /// `Ok` when every rank passed the same `mine`; otherwise every rank's, on every rank.
    fn fingerprints_agree(
        &self,
        comm: &SimpleCommunicator,
        mine: &str,
    ) -> std::result::Result<(), Vec<String>> {
        if self.world == 1 {
            return Ok(());
        }
        let h = fnv1a(mine.as_bytes());
        // max(h) and max(!h) = !min(h): all equal iff both come back as sent.
        let send = [h, !h];
        let mut recv = [0u64; 2];
        comm.all_reduce_into(&send[..], &mut recv[..], SystemOperation::max());
        if recv == send {
            return Ok(());
        }
        // Every rank saw the same maxima, so every rank is here: gather the descriptions.
        let len = mine.len() as Count;
        let mut lens = vec![0 as Count; self.world];
        comm.all_gather_into(&len, &mut lens[..]);
        let displs: Vec<Count> = lens
            .iter()
            .scan(0, |at, &l| {
                let d = *at;
                *at += l;
                Some(d)
            })
            .collect();
        let mut all = vec![0u8; lens.iter().map(|&l| l as usize).sum()];
        {
            let mut partition = PartitionMut::new(&mut all[..], &lens[..], &displs[..]);
            comm.all_gather_varcount_into(mine.as_bytes(), &mut partition);
        }
        Err((0..self.world)
            .map(|r| {
                let start = displs[r] as usize;
                String::from_utf8_lossy(&all[start..start + lens[r] as usize]).into_owned()
            })
            .collect())
    }
}

/// What a rank that drops its handle announces to the others' next operation.
const LEAVE: &str = "leave";

/// One wire type's share of an operation: the indices of its tensors and their values.
struct Staged<T> {
    members: Vec<usize>,
    data: Vec<T>,
}

impl<T: WithDType> Staged<T> {
    /// The result's tensors, in the shapes, dtypes and devices of `tensors`.
    fn unpack(&self, tensors: &[Tensor], out: &mut [Option<Tensor>]) -> Result<()> {
        let mut offset = 0;
        for &i in &self.members {
            let t = &tensors[i];
            let n = t.elem_count();
            let host = Tensor::from_slice(&self.data[offset..offset + n], t.dims(), &Device::Cpu)?;
            offset += n;
            out[i] = Some(host.to_dtype(t.dtype())?.to_device(t.device())?);
        }
        Ok(())
    }
}

/// How `dtype` travels: its own MPI type, or `f32` for the half types.
fn wire_dtype(dtype: DType) -> Option<DType> {
    match dtype {
        DType::U8 | DType::U32 | DType::I16 | DType::I32 | DType::I64 | DType::F32 | DType::F64 => {
            Some(dtype)
        }
        DType::BF16 | DType::F16 => Some(DType::F32),
        _ => None,
    }
}

/// `all_reduce_sum of 2 tensor(s): f32[3, 4], i64[5]`.
fn describe(op: Op, tensors: &[Tensor]) -> String {
    let list: Vec<String> = tensors
        .iter()
        .map(|t| format!("{}{:?}", t.dtype().as_str(), t.dims()))
        .collect();
    format!(
        "{} of {} tensor(s): {}",
        op.describe(),
        tensors.len(),
        list.join(", ")
    )
}

/// FNV-1a: the same on every rank whatever Rust built it (unlike `DefaultHasher`).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Collective for MpiCollective {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world
    }

    fn all_reduce_sum(&mut self, tensors: &[Tensor]) -> Result<Vec<Tensor>> {
        self.exchange(Op::AllReduce, tensors)?
            .ok_or_else(|| Error::Mpi("internal: all_reduce_sum returned nothing".into()))
    }

    fn reduce_sum(&mut self, tensors: &[Tensor], root: usize) -> Result<Option<Vec<Tensor>>> {
        self.exchange(Op::Reduce(root), tensors)
    }

    fn broadcast(&mut self, tensors: &[Tensor], root: usize) -> Result<Vec<Tensor>> {
        self.exchange(Op::Broadcast(root), tensors)?
            .ok_or_else(|| Error::Mpi("internal: broadcast returned nothing".into()))
    }

    /// Prints `reason` to stderr and calls `MPI_Abort` on the world with [`MPI_ABORT_CODE`]:
    /// `mpirun` kills every rank of the job (this one included) and exits nonzero. Unlike
    /// [`super::HostCollective::abort`], it does not return; save what must be saved first.
    fn abort(&self, reason: &str) {
        eprintln!(
            "flambeau: rank {} of {} aborts the MPI job: {reason}",
            self.rank, self.world
        );
        SimpleCommunicator::world().abort(MPI_ABORT_CODE)
    }
}

impl Drop for MpiCollective {
    /// A handle dropped by a panic aborts the job (`MPI_Abort`). Otherwise the rank leaves the
    /// group: until every rank has dropped its handle, each operation another rank starts fails
    /// there with [`Error::Aborted`] ("rank R: left the group"), so that a rank returning an error
    /// does not leave the others waiting forever in an MPI call (nor itself in `MPI_Finalize`).
    /// The last handle of the process then finalises MPI.
    fn drop(&mut self) {
        if self.world == 1 {
            return;
        }
        if std::thread::panicking() {
            self.abort("a panic unwound through its MpiCollective");
        }
        if Arc::strong_count(&self.env) > 1 {
            return; // the process's last handle leaves for it
        }
        let Ok(comm) = self.comm(Op::AllReduce) else {
            return;
        };
        while self.fingerprints_agree(&comm, LEAVE).is_err() {}
    }
}
