//! [`evaluate`]: loss and accuracy of a model over a loader's epoch.

use candle_core::{DType, Device, ModuleT, Tensor};
use flambeau_nn::loss::{correct_predictions, cross_entropy};
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

/// Runs `model` in evaluation mode over every batch of `loader`'s current epoch. The loss and
/// correct counts are summed on the model's device and read back once, at the end.
pub fn evaluate<M: ModuleT + ?Sized>(
    model: &M,
    loader: &mut DataLoader,
    callback: &mut dyn Callback,
) -> Result<Evaluation> {
    callback.on_eval_begin(loader.len() as u64);
    // The sums stay on the device (nothing of a batch is read back) and are read once, at the
    // end: loss × samples and correct predictions, in f64, in batch order.
    let mut sums: Option<(Tensor, Tensor)> = None;
    let mut seen = 0usize;
    for batch in loader.epoch() {
        let batch = batch?;
        let logits = model.forward_t(&batch.images, false)?;
        let n = batch.indices.len();
        let loss = cross_entropy(&logits, &batch.labels, &Default::default())?;
        let loss = loss.detach().to_dtype(DType::F64)?.mul(&Tensor::full(
            n as f64,
            (),
            logits.device(),
        )?)?;
        let correct = correct_predictions(&logits, &batch.labels)?;
        sums = Some(match sums {
            Some((l, c)) => ((l + loss)?, (c + correct)?),
            None => (loss, correct),
        });
        seen += n;
        callback.on_eval_batch();
    }
    let (loss_sum, correct) = match sums {
        Some((l, c)) => {
            let v = Tensor::stack(&[l, c], 0)?
                .to_device(&Device::Cpu)?
                .to_vec1::<f64>()?;
            (v[0], v[1])
        }
        None => (0.0, 0.0),
    };
    callback.on_eval_end();
    Ok(Evaluation {
        loss: loss_sum / seen.max(1) as f64,
        accuracy: correct / seen.max(1) as f64,
        examples: seen,
    })
}
