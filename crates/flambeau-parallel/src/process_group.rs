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
//! 3. the ranks sum their loss, correct predictions and batch sizes — on the device: nothing of
//!    a step is read back to the host, so a GPU is never waited for (the caller reads the sums
//!    when it shows them);
//! 4. about every [`STOP_CHECK_SECONDS`] the same sum also carries every rank's stop request
//!    and rank 0's choice of the next check, and is read: all ranks stop after the same step.

use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, ModuleT, Tensor, D};
use flambeau_core::VarStore;

use crate::collective::Collective;
use crate::rank_step::{Job, RankState, Shard, ShardLoss};
use crate::Result;

/// How often (in seconds of training, roughly) the ranks of a [`ProcessGroup`] read their summed
/// stop requests: rank 0 turns it into a number of steps from the pace of the steps so far.
pub const STOP_CHECK_SECONDS: f64 = 0.25;

/// The most steps between two stop checks, however fast the steps are.
const MAX_STOP_CHECK_STEPS: u64 = 1 << 16;

/// What one step of the group computed, seen from this rank.
pub struct ProcessStep {
    /// The global batch's gradient for each of the model's parameters that has one (rank 0
    /// only: it is the rank that steps the optimizer).
    pub grads: Option<GradStore>,
    /// `[loss × samples, correct predictions, samples]` summed over the ranks: an f64 tensor
    /// of shape `[3]` on this rank's device, not read back. The global batch's mean loss is
    /// `sums[0] / sums[2]`.
    pub sums: Tensor,
    /// On the steps where the ranks agree on stopping (about every [`STOP_CHECK_SECONDS`], the
    /// first step included): whether any rank asked to stop. `None` on the other steps, which
    /// the ranks never stop after.
    pub stop: Option<bool>,
}

/// When the ranks next read their stop requests; the same on every rank, because every rank
/// reads the same sum.
#[derive(Debug)]
struct StopCadence {
    /// Steps until the next check (1: this step is one).
    countdown: u64,
    /// Rank 0: when the last check was read, and the steps since.
    last_check: Option<Instant>,
    since_check: u64,
}

impl StopCadence {
    fn new() -> Self {
        Self {
            countdown: 1,
            last_check: None,
            since_check: 0,
        }
    }
}

/// The steps until the next stop check that rank 0 proposes, after `steps` steps took
/// `seconds`: [`STOP_CHECK_SECONDS`] worth at that pace (at least 1, at most 65536); 1 when
/// nothing has been measured yet.
fn stop_check_interval(steps: u64, seconds: f64) -> u64 {
    // NaN and non-positive times alike: nothing measured.
    if steps == 0 || seconds.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
        return 1;
    }
    let per_step = seconds / steps as f64;
    let n = (STOP_CHECK_SECONDS / per_step).floor();
    if n.is_finite() {
        (n as u64).clamp(1, MAX_STOP_CHECK_STEPS)
    } else {
        MAX_STOP_CHECK_STEPS
    }
}

/// This process's rank of a multi-process data-parallel run (see the module docs).
pub struct ProcessGroup {
    collective: Box<dyn Collective>,
    state: RankState,
    vars: VarStore,
    cadence: StopCadence,
}

impl ProcessGroup {
    /// This rank, training the model whose parameters and buffers are in `vars`, talking to
    /// the other ranks through `collective` (MPI, NCCL, or host-staged threads in tests).
    pub fn new(vars: &VarStore, collective: Box<dyn Collective>) -> Self {
        Self {
            collective,
            state: RankState::new(vars),
            vars: vars.clone(),
            cadence: StopCadence::new(),
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

    /// The element-wise sum of `values` over the ranks (metrics, flags), on every rank. Reads
    /// the sum back to the host: for occasional agreements, not for every step.
    pub fn sum(&mut self, values: &[f64]) -> Result<Vec<f64>> {
        let t = Tensor::new(values, self.vars.device())?;
        let sum = self.collective.all_reduce_sum(&[t])?;
        Ok(sum[0].to_device(&Device::Cpu)?.to_vec1::<f64>()?)
    }

    /// Whether any rank asks to stop (all ranks call it at the same point).
    pub fn any(&mut self, flag: bool) -> Result<bool> {
        Ok(self.sum(&[f64::from(u8::from(flag))])?[0] > 0.0)
    }

    /// One step on this rank's batch (see the module docs); `stop` is this rank's stop request,
    /// taken into account on the steps where [`ProcessStep::stop`] is `Some`. `model` is the
    /// one whose parameters are in the group's store.
    pub fn step(
        &mut self,
        model: &dyn ModuleT,
        images: &Tensor,
        labels: &Tensor,
        loss: &ShardLoss,
        stop: bool,
    ) -> Result<ProcessStep> {
        let device = self.vars.device().clone();
        let n = images.dim(0)? as f64;
        // A fill on the device, not an upload from the host.
        let local = Tensor::full(n, 1, &device)?;
        let total = self
            .collective
            .all_reduce_sum(std::slice::from_ref(&local))?;
        let total = total.into_iter().next().expect("one tensor reduced");
        let job = Job {
            shard: Some(Shard {
                images: images.clone(),
                labels: labels.clone(),
                weight: local.broadcast_div(&total)?.reshape(())?,
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
            .argmax(D::Minus1)?
            .to_dtype(DType::I64)?
            .eq(&labels.to_dtype(DType::I64)?)?
            .to_dtype(DType::F64)?
            .sum_all()?;
        let check = self.cadence.countdown == 1;
        let mut parts = vec![mean.affine(n, 0.0)?.reshape(1)?, correct.reshape(1)?, local];
        if check {
            // Every rank's stop request and rank 0's proposal for the next check ride on the
            // same sum: no extra collective.
            let proposal = match (self.is_main(), self.cadence.last_check) {
                (true, Some(t)) => {
                    // This step's forward and backward are (about) done: since_check + 1 steps.
                    stop_check_interval(self.cadence.since_check + 1, t.elapsed().as_secs_f64())
                }
                (true, None) => 1,
                (false, _) => 0,
            };
            parts.push(Tensor::new(
                &[f64::from(u8::from(stop)), proposal as f64],
                &device,
            )?);
        }
        let sums = self
            .collective
            .all_reduce_sum(&[Tensor::cat(&parts, 0)?])?
            .into_iter()
            .next()
            .expect("one tensor reduced");
        let grads = reduced.map(|sums| {
            let mut grads = GradStore::default();
            for (p, g) in self.vars.parameters().iter().zip(sums) {
                if let Some(g) = g {
                    grads.insert(p.as_tensor(), g);
                }
            }
            grads
        });
        self.cadence.since_check += 1;
        let stop = if check {
            // The one read of the sums, about every STOP_CHECK_SECONDS.
            let flags = sums
                .narrow(0, 3, 2)?
                .to_device(&Device::Cpu)?
                .to_vec1::<f64>()?;
            self.cadence.countdown = (flags[1] as u64).clamp(1, MAX_STOP_CHECK_STEPS);
            self.cadence.last_check = Some(Instant::now());
            self.cadence.since_check = 0;
            Some(flags[0] > 0.0)
        } else {
            self.cadence.countdown -= 1;
            None
        };
        Ok(ProcessStep {
            grads,
            sums: sums.narrow(0, 0, 3)?,
            stop,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stop_check_comes_about_every_quarter_second() {
        assert_eq!(stop_check_interval(0, 0.0), 1);
        assert_eq!(stop_check_interval(5, 0.0), 1);
        assert_eq!(stop_check_interval(10, 1.0), 2); // 0.1 s a step
        assert_eq!(stop_check_interval(1, 2.0), 1); // slower than the cadence: every step
        assert_eq!(stop_check_interval(100, 0.01), 2500);
        assert_eq!(stop_check_interval(u64::MAX, 1e-300), MAX_STOP_CHECK_STEPS);
        assert_eq!(stop_check_interval(3, f64::NAN), 1);
    }
}
