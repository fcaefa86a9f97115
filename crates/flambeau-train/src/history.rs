//! Per-epoch metrics: kept in the checkpoint (so a resumed run has its whole history) and written
//! out as `metrics.csv` after every epoch.

use std::io::Write;
use std::path::Path;

use flambeau_core::{Dict, DictKind, Value};

use crate::{Error, Result};

/// The metrics of one finished epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochRecord {
    /// 1-based epoch number.
    pub epoch: u64,
    /// Mean training loss.
    pub train_loss: f64,
    /// Training accuracy (augmented images, model in training mode).
    pub train_acc: f64,
    /// Mean validation loss.
    pub val_loss: f64,
    /// Validation accuracy.
    pub val_acc: f64,
    /// Learning rate at the end of the epoch.
    pub lr: f64,
    /// Training time of the epoch.
    pub seconds: f64,
}

/// Whether a validation accuracy beats the best so far: strictly, so that of equally good
/// epochs the first stays the best (the one `best.pth` holds).
pub fn improves(accuracy: f64, best: Option<f64>) -> bool {
    best.is_none_or(|b| accuracy > b)
}

/// The best epoch of a history by the rule of [`improves`].
pub fn best(history: &[EpochRecord]) -> Option<&EpochRecord> {
    history.iter().fold(None, |best, e| {
        if improves(e.val_acc, best.map(|b: &EpochRecord| b.val_acc)) {
            Some(e)
        } else {
            best
        }
    })
}

const FIELDS: [&str; 7] = [
    "epoch",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "lr",
    "seconds",
];

impl EpochRecord {
    fn values(&self) -> [f64; 7] {
        [
            self.epoch as f64,
            self.train_loss,
            self.train_acc,
            self.val_loss,
            self.val_acc,
            self.lr,
            self.seconds,
        ]
    }

    /// As a checkpoint entry (a dict).
    pub fn to_value(&self) -> Value {
        let mut d = Dict::new(DictKind::Plain);
        d.insert("epoch", self.epoch as i64);
        for (k, v) in FIELDS.iter().zip(self.values()).skip(1) {
            d.insert(*k, v);
        }
        Value::Dict(d)
    }

    /// From a checkpoint entry; `None` when a field is missing.
    pub fn from_value(v: &Value) -> Option<Self> {
        let f = |k: &str| v.get(k).and_then(Value::as_f64);
        Some(Self {
            epoch: v.get("epoch")?.as_i64()? as u64,
            train_loss: f("train_loss")?,
            train_acc: f("train_acc")?,
            val_loss: f("val_loss")?,
            val_acc: f("val_acc")?,
            lr: f("lr")?,
            seconds: f("seconds")?,
        })
    }
}

/// The history as a checkpoint entry (a list of dicts, readable in Python).
pub fn to_value(history: &[EpochRecord]) -> Value {
    Value::List(history.iter().map(EpochRecord::to_value).collect())
}

/// The history stored in a checkpoint (empty for checkpoints from elsewhere).
pub fn from_value(v: Option<&Value>) -> Vec<EpochRecord> {
    v.and_then(Value::as_seq)
        .map(|l| l.iter().filter_map(EpochRecord::from_value).collect())
        .unwrap_or_default()
}

/// Writes `metrics.csv` (header + one row per epoch), replacing the old one atomically.
pub fn write_csv(path: &Path, history: &[EpochRecord]) -> Result<()> {
    let tmp = path.with_extension("csv.tmp");
    let mut out = FIELDS.join(",");
    out.push('\n');
    for r in history {
        let row: Vec<String> = r.values().iter().map(|v| format!("{v}")).collect();
        out.push_str(&row.join(","));
        out.push('\n');
    }
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(out.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(())
}

/// Running sums of the epoch in progress; stored in mid-epoch checkpoints so that the epoch's
/// metrics stay right across an interruption.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EpochProgress {
    /// Sum of per-example losses.
    pub loss_sum: f64,
    /// Correct predictions.
    pub correct: f64,
    /// Examples seen.
    pub seen: f64,
    /// Training seconds so far.
    pub seconds: f64,
}

impl EpochProgress {
    /// As a checkpoint entry.
    pub fn to_value(self) -> Value {
        let mut d = Dict::new(DictKind::Plain);
        d.insert("loss_sum", self.loss_sum);
        d.insert("correct", self.correct);
        d.insert("seen", self.seen);
        d.insert("seconds", self.seconds);
        Value::Dict(d)
    }

    /// From a checkpoint entry (zero when absent).
    pub fn from_value(v: Option<&Value>) -> Self {
        let f = |k: &str| {
            v.and_then(|v| v.get(k))
                .and_then(Value::as_f64)
                .unwrap_or(0.0)
        };
        Self {
            loss_sum: f("loss_sum"),
            correct: f("correct"),
            seen: f("seen"),
            seconds: f("seconds"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(epoch: u64, val_acc: f64) -> EpochRecord {
        EpochRecord {
            epoch,
            train_loss: 1.0,
            train_acc: 0.5,
            val_loss: 1.0,
            val_acc,
            lr: 0.1,
            seconds: 1.0,
        }
    }

    #[test]
    fn of_tied_epochs_the_first_is_the_best() {
        let h = [
            record(1, 0.5),
            record(2, 0.9),
            record(3, 0.9),
            record(4, 0.7),
        ];
        assert_eq!(best(&h).map(|e| e.epoch), Some(2));
        assert!(best(&[]).is_none());
        assert!(!improves(0.9, Some(0.9)));
        assert!(improves(0.1, None));
    }
}
