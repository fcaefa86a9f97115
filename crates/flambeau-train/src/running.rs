//! [`RunningMetrics`]: the sums of the epoch in progress, kept on the device and added to every
//! step without reading them back, so that a GPU is never waited for; read only when shown
//! (a progress bar's redraw), saved (a checkpoint) or the epoch ends.

use candle_core::{DType, Device, Tensor};

use crate::history::EpochProgress;
use crate::Result;

/// The epoch's `[loss × samples, correct, samples]` as an f64 tensor of shape `[3]` on the
/// training device, and the last step's mean loss.
#[derive(Debug, Clone)]
pub(crate) struct RunningMetrics {
    sums: Tensor,
    last_loss: Option<Tensor>,
}

/// What [`RunningMetrics::read`] read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Totals {
    /// Sum of per-example losses.
    pub loss_sum: f64,
    /// Correct predictions.
    pub correct: f64,
    /// Examples seen.
    pub seen: f64,
    /// The last step's mean loss, if a step was added.
    pub last_loss: Option<f64>,
}

impl RunningMetrics {
    /// Sums starting from `start` (a resumed epoch's), on `device`.
    pub fn new(start: &EpochProgress, device: &Device) -> Result<Self> {
        Ok(Self {
            sums: Tensor::new(&[start.loss_sum, start.correct, start.seen], device)?,
            last_loss: None,
        })
    }

    /// Adds a step of `samples` examples (an f64 scalar tensor) whose mean loss and correct
    /// count are the f64 scalar tensors `loss` and `correct`: in f64, in step order, as a host
    /// sum would (`loss_sum += loss * samples`).
    pub fn add(&mut self, loss: &Tensor, correct: &Tensor, samples: &Tensor) -> Result<()> {
        let loss = loss.detach().to_dtype(DType::F64)?;
        let step = Tensor::stack(
            &[
                loss.mul(samples)?,
                correct.to_dtype(DType::F64)?,
                samples.clone(),
            ],
            0,
        )?;
        self.add_sums(&step, loss)
    }

    /// Adds a step's `[loss × samples, correct, samples]` (f64, shape `[3]`) summed elsewhere
    /// (over the ranks of a process group); its mean loss is `sums[0] / sums[2]`.
    pub fn add_sums(&mut self, step: &Tensor, loss: Tensor) -> Result<()> {
        self.sums = self
            .sums
            .add(&step.to_dtype(DType::F64)?.to_device(self.sums.device())?)?;
        self.last_loss = Some(loss);
        Ok(())
    }

    /// The mean loss of a step from its sums `[loss × samples, correct, samples]`.
    pub fn mean_of(step: &Tensor) -> Result<Tensor> {
        Ok(step
            .narrow(0, 0, 1)?
            .div(&step.narrow(0, 2, 1)?)?
            .reshape(())?)
    }

    /// The one host read (it waits for the device to finish the steps added so far).
    pub fn read(&self) -> Result<Totals> {
        let mut parts = vec![self.sums.clone()];
        if let Some(l) = &self.last_loss {
            parts.push(l.to_dtype(DType::F64)?.reshape(1)?);
        }
        let v = Tensor::cat(&parts, 0)?
            .to_device(&Device::Cpu)?
            .to_vec1::<f64>()?;
        Ok(Totals {
            loss_sum: v[0],
            correct: v[1],
            seen: v[2],
            last_loss: v.get(3).copied(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The device sums equal the host sums the loop kept before, bit for bit.
    #[test]
    fn device_sums_equal_per_step_host_sums() {
        let dev = Device::Cpu;
        let start = EpochProgress {
            loss_sum: 7.25,
            correct: 3.0,
            seen: 16.0,
            seconds: 1.0,
        };
        let mut running = RunningMetrics::new(&start, &dev).unwrap();
        let (mut loss_sum, mut correct, mut seen) = (start.loss_sum, start.correct, start.seen);
        let steps = [(2.25f32, 3.0, 8.0), (1.9e-3, 7.0, 8.0), (0.1, 1.0, 5.0)];
        let mut last = 0.0;
        for (loss, c, n) in steps {
            let l = Tensor::new(loss, &dev).unwrap();
            running
                .add(
                    &l,
                    &Tensor::new(c, &dev).unwrap(),
                    &Tensor::new(n, &dev).unwrap(),
                )
                .unwrap();
            loss_sum += loss as f64 * n;
            correct += c;
            seen += n;
            last = loss as f64;
        }
        let t = running.read().unwrap();
        assert_eq!(
            (t.loss_sum, t.correct, t.seen, t.last_loss),
            (loss_sum, correct, seen, Some(last))
        );
    }

    #[test]
    fn summed_steps_add_as_they_are() {
        let dev = Device::Cpu;
        let mut running = RunningMetrics::new(&EpochProgress::default(), &dev).unwrap();
        assert_eq!(running.read().unwrap().last_loss, None);
        let step = Tensor::new(&[6.0f64, 2.0, 4.0], &dev).unwrap();
        let mean = RunningMetrics::mean_of(&step).unwrap();
        running.add_sums(&step, mean).unwrap();
        let t = running.read().unwrap();
        assert_eq!((t.loss_sum, t.correct, t.seen), (6.0, 2.0, 4.0));
        assert_eq!(t.last_loss, Some(1.5));
    }
}
