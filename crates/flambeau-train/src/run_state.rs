//! The counters a run carries from checkpoint to checkpoint, and their checkpoint entries.

use flambeau_serialize::Checkpoint;
use flambeau_vision::data::LoaderState;

use crate::history::{self, EpochProgress, EpochRecord};

/// Checkpoint entries (besides the tutorial's) that the trainer writes and reads back.
pub(crate) const KEY_HISTORY: &str = "history";
pub(crate) const KEY_EPOCH_PROGRESS: &str = "epoch_progress";

/// What the loop tracks besides model, optimizer and scheduler.
#[derive(Debug, Clone, Default)]
pub struct RunState {
    /// Optimizer steps since the start of the run.
    pub global_step: i64,
    /// Loss of the last batch.
    pub last_loss: Option<f64>,
    /// Best validation accuracy.
    pub best_metric: Option<f64>,
    /// Finished epochs' metrics.
    pub history: Vec<EpochRecord>,
    /// Sums of the epoch in progress.
    pub progress: EpochProgress,
}

impl RunState {
    /// The state a checkpoint stopped in (`position` is where its data loader stood).
    pub fn from_checkpoint(ckpt: &Checkpoint, position: LoaderState) -> Self {
        Self {
            global_step: ckpt.global_step,
            last_loss: ckpt.loss,
            best_metric: ckpt.best_metric,
            history: history::from_value(ckpt.extra.get(KEY_HISTORY)),
            progress: if position.batch > 0 {
                EpochProgress::from_value(ckpt.extra.get(KEY_EPOCH_PROGRESS))
            } else {
                EpochProgress::default()
            },
        }
    }
}
