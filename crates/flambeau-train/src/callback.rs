//! [`Callback`]: what the loop tells a listener (progress bars, logging) as it runs. Every method
//! has an empty default, so a listener implements only what it shows.

use crate::history::EpochRecord;
use crate::running::RunningMetrics;
use crate::Result;

/// One trained batch. The epoch's loss and accuracy so far stay on the training device: read
/// them with [`BatchEnd::read`] when they are shown, not after every batch (each read waits for
/// the device to finish the work queued so far).
#[derive(Debug, Clone)]
pub struct BatchEnd {
    /// Batches of this epoch done so far (counting those before a resume).
    pub batch: u64,
    /// Batches per epoch.
    pub batches: u64,
    /// Learning rate of the first parameter group after this step.
    pub lr: f64,
    /// Training seconds of the epoch so far (counting those before a resume).
    pub seconds: f64,
    pub(crate) metrics: RunningMetrics,
}

/// The epoch so far, as [`BatchEnd::read`] reads it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochSoFar {
    /// Mean training loss of the epoch so far.
    pub mean_loss: f64,
    /// Training accuracy of the epoch so far.
    pub accuracy: f64,
    /// Training throughput of the epoch so far.
    pub images_per_second: f64,
}

impl BatchEnd {
    /// The epoch's metrics up to this batch: one read from the device, which waits for it.
    pub fn read(&self) -> Result<EpochSoFar> {
        let t = self.metrics.read()?;
        Ok(EpochSoFar {
            mean_loss: t.loss_sum / t.seen.max(1.0),
            accuracy: t.correct / t.seen.max(1.0),
            images_per_second: t.seen / self.seconds.max(1e-9),
        })
    }
}

/// A finished epoch.
#[derive(Debug, Clone)]
pub struct EpochEnd {
    /// Its metrics (as in `metrics.csv`).
    pub record: EpochRecord,
    /// Whether its validation accuracy is the best so far (it was saved as `best.pth`).
    pub is_best: bool,
    /// Training images of the epoch.
    pub images: f64,
}

/// Listens to [`crate::Trainer::fit`] and [`crate::evaluate`].
pub trait Callback {
    /// An epoch's training pass begins (1-based `epoch` of `epochs`), at batch `start` of
    /// `batches` (non-zero when resuming mid-epoch).
    fn on_train_begin(&mut self, _epoch: u64, _epochs: u64, _start: u64, _batches: u64) {}
    /// A batch was trained.
    fn on_batch_end(&mut self, _batch: &BatchEnd) {}
    /// The training pass ended (finished or stopped).
    fn on_train_end(&mut self) {}
    /// Evaluation over `batches` batches begins.
    fn on_eval_begin(&mut self, _batches: u64) {}
    /// An evaluation batch was done.
    fn on_eval_batch(&mut self) {}
    /// Evaluation ended.
    fn on_eval_end(&mut self) {}
    /// An epoch ended: validated, checkpointed, metrics written.
    fn on_epoch_end(&mut self, _epoch: &EpochEnd) {}
}

/// No listener.
impl Callback for () {}
