//! One rank's part of a data-parallel step, the same code for a replica thread and for a
//! process of a multi-process run: receive rank 0's parameters and buffers, forward and
//! backward on the rank's shard with the loss weighted by the shard's share of the global
//! batch, and reduce the gradients to rank 0.

use std::sync::Arc;

use candle_core::{ModuleT, Tensor, Var};
use flambeau_core::VarStore;

use crate::collective::Collective;
use crate::Result;

/// The loss of one shard: `(logits, labels)` to a scalar, the mean over the shard's samples
/// (e.g. cross-entropy with the run's options).
pub type ShardLoss = Arc<dyn Fn(&Tensor, &Tensor) -> candle_core::Result<Tensor> + Send + Sync>;

/// A rank's work for one step.
pub(crate) struct Shard {
    pub images: Tensor,
    pub labels: Tensor,
    /// The shard's share of the batch: an f64 scalar on the shard's device (in a multi-process
    /// run it is computed there from the ranks' summed batch sizes, and never read back).
    pub weight: Tensor,
}

pub(crate) struct Job {
    pub shard: Option<Shard>,
    pub loss: ShardLoss,
}

/// A shard's logits and mean loss (an f64 scalar), both detached, on the shard's device.
pub(crate) type ShardResult = Option<(Tensor, Tensor)>;

/// What a rank works on: its parameters and buffers in the store's order.
pub(crate) struct RankState {
    entries: Vec<Var>,
    params: Vec<Var>,
}

/// Rank 0's reduced gradients (one per parameter; `None` where rank 0's backward gave none).
pub(crate) type Reduced = Option<Vec<Option<Tensor>>>;

impl RankState {
    pub fn new(vars: &VarStore) -> Self {
        Self {
            entries: vars.entries().into_iter().map(|e| e.var).collect(),
            params: vars.parameters(),
        }
    }

    /// This rank's part of one step (the module docs).
    pub fn step(
        &self,
        model: &dyn ModuleT,
        collective: &mut dyn Collective,
        job: &Job,
    ) -> Result<(Reduced, ShardResult)> {
        let rank = collective.rank();
        let state: Vec<Tensor> = self.entries.iter().map(|v| v.as_tensor().clone()).collect();
        let synced = collective.broadcast(&state, 0)?;
        if rank != 0 {
            for (v, t) in self.entries.iter().zip(&synced) {
                v.set(t)?;
            }
        }
        let (grads, out) = match &job.shard {
            Some(shard) => {
                let logits = model.forward_t(&shard.images, true)?;
                let loss = (job.loss)(&logits, &shard.labels)?;
                let weight = shard.weight.to_dtype(loss.dtype())?;
                let grads = loss.broadcast_mul(&weight)?.backward()?;
                let value = loss.detach().to_dtype(candle_core::DType::F64)?;
                let grads: Vec<Option<Tensor>> = self
                    .params
                    .iter()
                    .map(|p| grads.get(p.as_tensor()).cloned())
                    .collect();
                (grads, Some((logits.detach(), value)))
            }
            None => (vec![None; self.params.len()], None),
        };
        let has: Vec<bool> = grads.iter().map(Option::is_some).collect();
        let dense = grads
            .into_iter()
            .zip(&self.params)
            .map(|(g, p)| match g {
                Some(g) => Ok(g),
                None => p.as_tensor().zeros_like(),
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let reduced = collective.reduce_sum(&dense, 0)?;
        let reduced = reduced.map(|sums| {
            sums.into_iter()
                .zip(has)
                .map(|(s, has)| has.then_some(s))
                .collect()
        });
        Ok((reduced, out))
    }
}
