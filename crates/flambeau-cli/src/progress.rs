//! The progress bars of `train` and `eval`: a [`Callback`] that draws what the loop reports.

use std::time::{Duration, Instant};

use flambeau_train::{BatchEnd, Callback, EpochEnd};
use indicatif::{ProgressBar, ProgressStyle};

/// The least time between two reads of the training metrics: each read waits for the device,
/// so the bar's loss, learning rate and throughput are refreshed at most this often (and on the
/// epoch's last batch).
pub const READ_EVERY: Duration = Duration::from_millis(250);

/// Whether the bar reads the metrics after batch `batch` of `batches`, its last read having been
/// at `last` (never: `None`): on the last batch, and otherwise once [`READ_EVERY`] has passed.
pub fn read_due(last: Option<Instant>, now: Instant, batch: u64, batches: u64) -> bool {
    batch >= batches || last.is_none_or(|t| now.saturating_duration_since(t) >= READ_EVERY)
}

/// Bars on stderr (hidden when it is not a terminal, or with `--quiet`), and the line of every
/// finished epoch on stdout.
pub struct Progress {
    quiet: bool,
    bar: Option<ProgressBar>,
    /// The run's epochs, for the epoch lines.
    epochs: u64,
    /// The evaluation bar's label.
    eval_label: &'static str,
    /// When the training metrics were last read (see [`read_due`]).
    last_read: Option<Instant>,
}

impl Progress {
    /// Bars unless `quiet`; evaluation bars labelled `eval_label`.
    pub fn new(quiet: bool, eval_label: &'static str) -> Self {
        Self {
            quiet,
            bar: None,
            epochs: 0,
            eval_label,
            last_read: None,
        }
    }

    fn start(&mut self, len: u64, prefix: String, position: u64) {
        if self.quiet {
            return;
        }
        let bar = ProgressBar::new(len).with_prefix(prefix);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} {elapsed_precise}<{eta_precise} {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_position(position);
        self.bar = Some(bar);
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Callback for Progress {
    fn on_train_begin(&mut self, epoch: u64, epochs: u64, start: u64, batches: u64) {
        self.epochs = epochs;
        self.last_read = None;
        self.start(batches, format!("epoch {epoch}/{epochs}"), start);
    }

    fn on_batch_end(&mut self, b: &BatchEnd) {
        let Some(bar) = &self.bar else {
            return;
        };
        bar.set_position(b.batch);
        let now = Instant::now();
        if !read_due(self.last_read, now, b.batch, b.batches) {
            return;
        }
        self.last_read = Some(now);
        match b.read() {
            Ok(m) => bar.set_message(format!(
                "loss {:.4} lr {:.5} {:.0} img/s",
                m.mean_loss, b.lr, m.images_per_second
            )),
            Err(e) => bar.set_message(format!("(metrics unreadable: {e})")),
        }
    }

    fn on_train_end(&mut self) {
        self.finish();
    }

    fn on_eval_begin(&mut self, batches: u64) {
        self.start(batches, self.eval_label.into(), 0);
    }

    fn on_eval_batch(&mut self) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }

    fn on_eval_end(&mut self) {
        self.finish();
    }

    fn on_epoch_end(&mut self, e: &EpochEnd) {
        let r = &e.record;
        println!(
            "epoch {}/{}: train loss {:.4} acc {:.2}% | val loss {:.4} acc {:.2}%{} | lr {:.5} | {:.1} s, {:.0} img/s",
            r.epoch,
            self.epochs,
            r.train_loss,
            100.0 * r.train_acc,
            r.val_loss,
            100.0 * r.val_acc,
            if e.is_best { " (best)" } else { "" },
            r.lr,
            r.seconds,
            e.images / r.seconds.max(1e-9)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_reads_at_most_every_quarter_second_and_at_the_end() {
        let t0 = Instant::now();
        assert!(read_due(None, t0, 1, 100), "the first batch is shown");
        assert!(!read_due(Some(t0), t0, 2, 100));
        assert!(!read_due(Some(t0), t0 + Duration::from_millis(249), 3, 100));
        assert!(read_due(Some(t0), t0 + READ_EVERY, 4, 100));
        assert!(read_due(Some(t0), t0, 100, 100), "the last batch is shown");
        // A clock that goes backwards reads nothing extra.
        assert!(!read_due(Some(t0 + READ_EVERY), t0, 5, 100));
    }
}
