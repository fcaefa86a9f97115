//! [`ProcessGroup`]: this process's rank in a group of processes that train one model —
//! DistributedDataParallel across processes (launched by torchrun or mpirun), with the same
//! per-rank step as the replica threads of [`crate::ReplicaGroup`].
//!
//! Every rank reads its own shard of each global batch (a sharded data loader), and each step:
//! 1. the ranks sum their batch sizes, so that each weights its loss by its share of the global
//!    batch;
//! 2. every rank receives rank 0's parameters and buffers, runs forward and backward on its own
//!    batch, and the gradients are summed on rank 0 — the global batch's mean gradient, for the
//!    one optimizer that rank 0 steps;
//! 3. the ranks sum their loss, correct predictions and stop requests, so that every rank
//!    reports the global metrics and all stop after the same step.

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, ModuleT, Tensor};
use flambeau_core::VarStore;

use crate::collective::Collective;
use crate::rank_step::{Job, RankState, Shard, ShardLoss};
use crate::Result;

/// What one step of the group computed, seen from this rank.
pub struct ProcessStep {
    /// The global batch's gradient for each of the model's parameters that has one (rank 0
    /// only: it is the rank that steps the optimizer).
    pub grads: Option<GradStore>,
    /// The global batch's mean loss.
    pub loss: f64,
    /// Correct predictions over the global batch.
    pub correct: f64,
    /// Samples in the global batch.
    pub samples: f64,
    /// Whether any rank asked to stop after this step.
    pub stop: bool,
}

/// This process's rank of a multi-process data-parallel run (see the module docs).
pub struct ProcessGroup {
    collective: Box<dyn Collective>,
    state: RankState,
    vars: VarStore,
}

impl ProcessGroup {
    /// This rank, training the model whose parameters and buffers are in `vars`, talking to
    /// the other ranks through `collective` (MPI, NCCL, or host-staged threads in tests).
    pub fn new(vars: &VarStore, collective: Box<dyn Collective>) -> Self {
        Self {
            collective,
            state: RankState::new(vars),
            vars: vars.clone(),
        }
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.collective.rank()
    }

    /// The number of processes.
    pub fn world_size(&self) -> usize {
        self.collective.world_size()
    }

    /// Whether this is rank 0: the rank that steps the optimizer and writes checkpoints.
    pub fn is_main(&self) -> bool {
        self.rank() == 0
    }

    /// The element-wise sum of `values` over the ranks (metrics, flags), on every rank.
    pub fn sum(&mut self, values: &[f64]) -> Result<Vec<f64>> {
        let t = Tensor::new(values, self.vars.device())?;
        let sum = self.collective.all_reduce_sum(&[t])?;
        Ok(sum[0].to_device(&Device::Cpu)?.to_vec1::<f64>()?)
    }

    /// Whether any rank asks to stop (all ranks call it at the same point).
    pub fn any(&mut self, flag: bool) -> Result<bool> {
        Ok(self.sum(&[f64::from(u8::from(flag))])?[0] > 0.0)
    }

    /// One step on this rank's batch (see the module docs); `stop` is this rank's stop request.
    /// `model` is the one whose parameters are in the group's store.
    pub fn step(
        &mut self,
        model: &dyn ModuleT,
        images: &Tensor,
        labels: &Tensor,
        loss: &ShardLoss,
        stop: bool,
    ) -> Result<ProcessStep> {
        let n = images.dim(0)? as f64;
        let total = self.sum(&[n])?[0];
        let job = Job {
            shard: Some(Shard {
                images: images.clone(),
                labels: labels.clone(),
                weight: n / total,
            }),
            loss: loss.clone(),
        };
        let result = self.state.step(model, self.collective.as_mut(), &job);
        let (reduced, out) = match result {
            Ok(r) => r,
            Err(e) => {
                self.collective.abort(&e.to_string());
                return Err(e);
            }
        };
        let (logits, mean) = out.expect("this rank had a batch");
        let correct = logits
            .argmax(1)?
            .eq(&labels.to_dtype(DType::U32)?)?
            .to_dtype(DType::F64)?
            .sum_all()?
            .to_scalar::<f64>()?;
        let sums = self.sum(&[mean * n, correct, f64::from(u8::from(stop))])?;
        let grads = reduced.map(|sums| {
            let mut grads = GradStore::default();
            for (p, g) in self.vars.parameters().iter().zip(sums) {
                if let Some(g) = g {
                    grads.insert(p.as_tensor(), g);
                }
            }
            grads
        });
        Ok(ProcessStep {
            grads,
            loss: sums[0] / total,
            correct: sums[1],
            samples: total,
            stop: sums[2] > 0.0,
        })
    }
}
