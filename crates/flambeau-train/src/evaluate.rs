//! [`evaluate`]: loss and accuracy of a model over a loader's epoch.

use candle_core::ModuleT;
use flambeau_nn::loss::{accuracy, cross_entropy};
use flambeau_vision::data::DataLoader;

use crate::{Callback, Result};

/// Loss and accuracy over a whole loader.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    /// Mean cross-entropy.
    pub loss: f64,
    /// Fraction correct.
    pub accuracy: f64,
    /// Examples evaluated.
    pub examples: usize,
}

/// Runs `model` in evaluation mode over every batch of `loader`'s current epoch.
pub fn evaluate<M: ModuleT + ?Sized>(
    model: &M,
    loader: &mut DataLoader,
    callback: &mut dyn Callback,
) -> Result<Evaluation> {
    callback.on_eval_begin(loader.len() as u64);
    let (mut loss_sum, mut correct, mut seen) = (0.0, 0.0, 0usize);
    for batch in loader.epoch() {
        let batch = batch?;
        let logits = model.forward_t(&batch.images, false)?;
        let n = batch.indices.len();
        let loss = cross_entropy(&logits, &batch.labels, &Default::default())?;
        loss_sum += loss.to_scalar::<f32>()? as f64 * n as f64;
        correct += accuracy(&logits, &batch.labels)? * n as f64;
        seen += n;
        callback.on_eval_batch();
    }
    callback.on_eval_end();
    Ok(Evaluation {
        loss: loss_sum / seen.max(1) as f64,
        accuracy: correct / seen.max(1) as f64,
        examples: seen,
    })
}
