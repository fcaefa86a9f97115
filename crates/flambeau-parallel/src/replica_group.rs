//! [`ReplicaGroup`]: data-parallel training with DistributedDataParallel's semantics over
//! persistent replicas, one worker thread per replica.
//!
//! Every step, each rank (rank 0 is the caller's own model, on the calling thread):
//! 1. receives the parameters and buffers of rank 0 (DDP's `broadcast_buffers`; parameters too,
//!    because only rank 0 runs the optimizer),
//! 2. runs forward and backward on its shard of the batch (`torch.chunk` sizes), with its loss
//!    weighted by the shard's share of the batch, so that
//! 3. the gradients summed on rank 0 (fixed order: rank 0 + rank 1 + …) are the whole batch's
//!    mean gradient — DDP's average over ranks when the shards are equal, and still the right
//!    one when they are not (10 samples over 4 ranks: 3, 3, 3, 1).
//!
//! Batch norm computes its statistics per shard, and rank 0's running statistics are the ones
//! kept, as in DDP. There is one optimizer, on rank 0, so its state is that of a one-device run
//! and a checkpoint resumes on any number of replicas.
//!
//! The ranks meet through a [`Backend`]: host-staged ([`HostCollective`], any devices) or NCCL
//! (the `nccl` feature: one rank per GPU). Each rank creates its handle on its own thread.
//!
//! On a GPU every rank after the first runs on a stream of its own (also several ranks on one
//! GPU), and every tensor that crosses between ranks — shards out, logits back — goes through
//! [`flambeau_kernels::device::transfer`], which orders the two streams both ways.

use std::sync::mpsc;
use std::thread::JoinHandle;

use candle_core::backprop::GradStore;
use candle_core::{Device, ModuleT, Tensor};
use flambeau_core::VarStore;
use flambeau_kernels::device::{open_stream_like, transfer};

use crate::collective::{Collective, HostCollective};
use crate::rank_step::{Job, RankState, Shard, ShardLoss, ShardResult};
use crate::replicate::{replicate, BuildModel};
use crate::{chunk_sizes, Error, Result};

/// What one data-parallel step computed.
pub struct StepOutput {
    /// The whole batch's gradient for each of rank 0's parameters that has one.
    pub grads: GradStore,
    /// The batch's mean loss (the shards' losses weighted by their sizes): an f64 scalar on
    /// rank 0's device, not read back (`to_scalar::<f64>()` reads it, waiting for the device).
    pub loss: Tensor,
    /// The logits of the whole batch, in batch order, on rank 0's device (detached).
    pub logits: Tensor,
}

/// What the ranks of a [`ReplicaGroup`] reduce and broadcast through.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// [`HostCollective`]: through host memory, summed in rank order; any devices, several
    /// replicas per device allowed.
    #[default]
    Host,
    /// [`crate::NcclCollective`]: GPU to GPU through NCCL; every device a distinct CUDA GPU.
    #[cfg(feature = "nccl")]
    Nccl,
}

/// Creates one rank's collective handle on the thread that will use it (an NCCL communicator
/// must be created and used on its GPU's thread).
type JoinCollective = Box<dyn FnOnce() -> Result<Box<dyn Collective>> + Send>;

impl Backend {
    /// One [`JoinCollective`] per device (index = rank). Fails before any thread starts when
    /// the devices do not suit the backend (NCCL: a CPU device, a GPU listed twice).
    fn ranks(self, devices: &[Device]) -> Result<Vec<JoinCollective>> {
        match self {
            Backend::Host => Ok(HostCollective::group(devices.len())
                .into_iter()
                .map(|h| Box::new(move || Ok(Box::new(h) as Box<dyn Collective>)) as JoinCollective)
                .collect()),
            #[cfg(feature = "nccl")]
            Backend::Nccl => Ok(crate::NcclCollective::group(devices)?
                .into_iter()
                .map(|r| {
                    Box::new(move || Ok(Box::new(r.join()?) as Box<dyn Collective>))
                        as JoinCollective
                })
                .collect()),
        }
    }
}

struct Worker {
    rank: usize,
    device: Device,
    jobs: Option<mpsc::Sender<Job>>,
    results: mpsc::Receiver<Result<ShardResult>>,
    thread: Option<JoinHandle<()>>,
}

/// Persistent replicas of a model that train as one (see the module docs).
pub struct ReplicaGroup {
    vars: VarStore,
    collective: Box<dyn Collective>,
    workers: Vec<Worker>,
    devices: Vec<Device>,
}

impl ReplicaGroup {
    /// A group of one replica per entry of `devices`: rank 0 is the caller's model (its
    /// parameters in `vars`, on `devices[0]`), the others are built by `build` — the
    /// constructor of that model — and run on worker threads. Replicas on the same device are
    /// allowed (several CPU replicas, several replicas on one GPU); they meet through
    /// [`HostCollective`].
    pub fn new<M>(vars: &VarStore, build: impl BuildModel<M>, devices: &[Device]) -> Result<Self>
    where
        M: ModuleT + Send + 'static,
    {
        Self::with_backend(vars, build, devices, Backend::Host)
    }

    /// [`ReplicaGroup::new`] whose ranks meet through `backend`. With [`Backend::Host`] this is
    /// `new`; NCCL wants one rank per CUDA GPU and refuses other devices and a GPU listed twice
    /// ([`Error::NotCuda`], [`Error::DuplicateGpu`]) before anything starts.
    pub fn with_backend<M>(
        vars: &VarStore,
        build: impl BuildModel<M>,
        devices: &[Device],
        backend: Backend,
    ) -> Result<Self>
    where
        M: ModuleT + Send + 'static,
    {
        let Some(first) = devices.first() else {
            return Err(Error::NoDevices);
        };
        if !first.same_device(vars.device()) {
            return Err(Error::BaseDevice {
                expected: format!("{first:?}"),
                found: format!("{:?}", vars.device()),
            });
        }
        let devices = &own_queues(devices)?;
        let mut handles = backend.ranks(devices)?.into_iter();
        let join_root = handles.next().expect("at least one rank");
        let replicas = replicate(vars, &build, &devices[1..])?;
        let started = replicas
            .into_iter()
            .zip(handles)
            .zip(&devices[1..])
            .enumerate()
            .map(|(i, ((replica, join), device))| {
                let (jobs, inbox) = mpsc::channel::<Job>();
                let (outbox, results) = mpsc::channel();
                let (ready_tx, ready) = mpsc::channel();
                let thread = std::thread::Builder::new()
                    .name(format!("flambeau-replica-{}", i + 1))
                    .spawn(move || {
                        let ranks = RankState::new(&replica.vars);
                        // The rank's handle is made here, on the thread that uses it; NCCL's
                        // join blocks until every rank, rank 0 included, has joined.
                        let mut collective = match join() {
                            Ok(c) => {
                                let _ = ready_tx.send(Ok(()));
                                c
                            }
                            Err(e) => {
                                let _ = ready_tx.send(Err(e));
                                return;
                            }
                        };
                        while let Ok(job) = inbox.recv() {
                            let result = ranks.step(&replica.model, collective.as_mut(), &job);
                            let result = result.map(|(_, shard)| shard);
                            if let Err(e) = &result {
                                collective.abort(&e.to_string());
                            }
                            if outbox.send(result).is_err() {
                                break;
                            }
                        }
                    })
                    .map_err(|e| Error::Replica {
                        rank: i + 1,
                        device: format!("{device:?}"),
                        message: format!("cannot start its thread: {e}"),
                    })?;
                Ok((
                    Worker {
                        rank: i + 1,
                        device: device.clone(),
                        jobs: Some(jobs),
                        results,
                        thread: Some(thread),
                    },
                    ready,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        // Rank 0 joins on the calling thread once the workers are started (NCCL's join returns
        // when all ranks are in), then every worker reports whether it joined.
        let collective = join_root()?;
        let mut workers = Vec::with_capacity(started.len());
        for (worker, ready) in started {
            match ready.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(worker.failed(&e.to_string())),
                Err(_) => return Err(worker.failed("its thread ended before joining the group")),
            }
            workers.push(worker);
        }
        Ok(Self {
            vars: vars.clone(),
            collective,
            workers,
            devices: devices.to_vec(),
        })
    }

    /// The number of replicas.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// Whether the group is empty (never: it has at least rank 0).
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// The device of each rank.
    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    /// The samples each rank gets from a batch of `batch` (`torch.chunk` sizes; ranks beyond
    /// the list get none).
    pub fn shard_sizes(&self, batch: usize) -> Vec<usize> {
        chunk_sizes(batch, self.len())
    }

    /// One forward and backward of the batch over the replicas, `model` being rank 0's (the
    /// one whose parameters are in the group's store). The caller then steps its optimizer
    /// with [`StepOutput::grads`]; the next step hands the updated parameters to every rank.
    pub fn step(
        &mut self,
        model: &dyn ModuleT,
        images: &Tensor,
        labels: &Tensor,
        loss: &ShardLoss,
    ) -> Result<StepOutput> {
        let n = images.dim(0)?;
        let sizes = self.shard_sizes(n);
        let mut start = 0;
        let mut shards = Vec::with_capacity(self.len());
        for (rank, device) in self.devices.iter().enumerate() {
            let shard = match sizes.get(rank) {
                Some(&len) => {
                    let s = Shard {
                        images: transfer(&images.narrow(0, start, len)?, device)?,
                        labels: transfer(&labels.narrow(0, start, len)?, device)?,
                        weight: Tensor::full(len as f64 / n as f64, (), device)?,
                    };
                    start += len;
                    Some(s)
                }
                None => None,
            };
            shards.push(shard);
        }
        let mut shards = shards.into_iter();
        let root_shard = shards.next().expect("rank 0");
        for (w, shard) in self.workers.iter().zip(shards) {
            let job = Job {
                shard,
                loss: loss.clone(),
            };
            if w.jobs.as_ref().is_none_or(|j| j.send(job).is_err()) {
                self.collective.abort("a replica's thread has ended");
                return Err(w.failed("its thread has ended"));
            }
        }
        let job = Job {
            shard: root_shard,
            loss: loss.clone(),
        };
        let root = RankState::new(&self.vars).step(model, self.collective.as_mut(), &job);
        if root.is_err() {
            self.collective.abort("rank 0 failed");
        }
        let mut outputs = Vec::with_capacity(self.len());
        let mut failure = None;
        for w in &self.workers {
            match w.results.recv() {
                Ok(Ok(out)) => outputs.push(out),
                Ok(Err(Error::Aborted(_))) => {}
                Ok(Err(e)) => {
                    failure.get_or_insert(w.failed(&e.to_string()));
                }
                Err(_) => {
                    failure.get_or_insert(w.failed("its thread has ended"));
                }
            }
        }
        let (reduced, root_out) = match (root, failure) {
            (_, Some(e)) => return Err(e),
            (Err(e), None) => return Err(e),
            (Ok(r), None) => r,
        };
        let reduced = reduced.expect("rank 0 is the root of the reduction");
        let mut grads = GradStore::default();
        for (p, g) in self.vars.parameters().iter().zip(reduced) {
            if let Some(g) = g {
                grads.insert(p.as_tensor(), g);
            }
        }
        let root_device = &self.devices[0];
        let mut loss_sum: Option<Tensor> = None;
        let mut logits = Vec::new();
        for ((l, value), size) in std::iter::once(root_out)
            .chain(outputs)
            .flatten()
            .zip(&sizes)
        {
            // On the device, in the rank order and f64 arithmetic of the host sum it replaces.
            let term = transfer(&value, root_device)?.affine(*size as f64, 0.0)?;
            loss_sum = Some(match loss_sum {
                Some(s) => (s + term)?,
                None => term,
            });
            logits.push(transfer(&l, root_device)?);
        }
        let loss = match loss_sum {
            Some(s) => s.div(&Tensor::full(n as f64, (), root_device)?)?,
            None => Tensor::zeros((), candle_core::DType::F64, root_device)?,
        };
        Ok(StepOutput {
            grads,
            loss,
            logits: Tensor::cat(&logits, 0)?,
        })
    }
}

/// The devices the ranks run on: rank 0's as given; every other rank on a GPU gets a stream and
/// cuBLAS/cuRAND handles of its own on that GPU (a handle must not serve two threads at once,
/// and its own stream lets its kernels overlap rank 0's). Tensors cross between them only through
/// [`transfer`], which orders both streams.
fn own_queues(devices: &[Device]) -> Result<Vec<Device>> {
    devices
        .iter()
        .enumerate()
        .map(|(rank, d)| match rank {
            0 => Ok(d.clone()),
            _ => Ok(open_stream_like(d)?),
        })
        .collect()
}

impl Worker {
    fn failed(&self, message: &str) -> Error {
        Error::Replica {
            rank: self.rank,
            device: format!("{:?}", self.device),
            message: message.to_string(),
        }
    }
}

impl Drop for ReplicaGroup {
    fn drop(&mut self) {
        for w in &mut self.workers {
            w.jobs = None; // the worker's loop ends
        }
        for w in &mut self.workers {
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
    }
}
