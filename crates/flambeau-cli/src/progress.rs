//! The progress bars of `train` and `eval`: a [`Callback`] that draws what the loop reports.

use flambeau_train::{BatchEnd, Callback, EpochEnd};
use indicatif::{ProgressBar, ProgressStyle};

/// Bars on stderr (hidden when it is not a terminal, or with `--quiet`), and the line of every
/// finished epoch on stdout.
pub struct Progress {
    quiet: bool,
    bar: Option<ProgressBar>,
    /// The run's epochs, for the epoch lines.
    epochs: u64,
    /// The evaluation bar's label.
    eval_label: &'static str,
}

impl Progress {
    /// Bars unless `quiet`; evaluation bars labelled `eval_label`.
    pub fn new(quiet: bool, eval_label: &'static str) -> Self {
        Self {
            quiet,
            bar: None,
            epochs: 0,
            eval_label,
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
        self.start(batches, format!("epoch {epoch}/{epochs}"), start);
    }

    fn on_batch_end(&mut self, b: &BatchEnd) {
        if let Some(bar) = &self.bar {
            bar.set_position(b.batch);
            bar.set_message(format!(
                "loss {:.4} lr {:.5} {:.0} img/s",
                b.mean_loss, b.lr, b.images_per_second
            ));
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
