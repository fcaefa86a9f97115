//! [`Callback`]: what the loop tells a listener (progress bars, logging) as it runs. Every method
//! has an empty default, so a listener implements only what it shows.

use crate::history::EpochRecord;

/// One trained batch.
#[derive(Debug, Clone, Copy)]
pub struct BatchEnd {
    /// Batches of this epoch done so far (counting those before a resume).
    pub batch: u64,
    /// Batches per epoch.
    pub batches: u64,
    /// Mean training loss of the epoch so far.
    pub mean_loss: f64,
    /// Learning rate of the first parameter group after this step.
    pub lr: f64,
    /// Training throughput of the epoch so far.
    pub images_per_second: f64,
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
