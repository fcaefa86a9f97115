//! The counters a run carries from checkpoint to checkpoint, and their checkpoint entries.

use flambeau_core::{Dict, DictKind, Value};
use flambeau_serialize::Checkpoint;
use flambeau_vision::data::LoaderState;

use super::args::Args;
use super::history::{self, EpochProgress, EpochRecord};

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
            history: history::from_value(ckpt.extra.get("history")),
            progress: if position.batch > 0 {
                EpochProgress::from_value(ckpt.extra.get("epoch_progress"))
            } else {
                EpochProgress::default()
            },
        }
    }
}

/// `{'seed': …, 'epoch': …, 'batch': …}`.
pub fn loader_state_value(s: LoaderState) -> Value {
    let mut d = Dict::new(DictKind::Plain);
    d.insert("seed", s.seed as i64);
    d.insert("epoch", s.epoch as i64);
    d.insert("batch", s.batch as i64);
    Value::Dict(d)
}

/// The loader position stored by [`loader_state_value`], if the checkpoint has one.
pub fn loader_state(v: Option<&Value>) -> Option<LoaderState> {
    let v = v?;
    let field = |k: &str| v.get(k)?.as_i64().filter(|x| *x >= 0).map(|x| x as u64);
    Some(LoaderState {
        seed: field("seed")?,
        epoch: field("epoch")?,
        batch: field("batch")?,
    })
}

/// The command line as a dict, for people reading the checkpoint (torchvision stores `args` too).
pub fn args_value(a: &Args) -> Value {
    let mut d = Dict::new(DictKind::Plain);
    let opt = |v: Option<String>| v.map(Value::Str).unwrap_or(Value::None);
    d.insert("data", format!("{:?}", a.data));
    d.insert("epochs", a.epochs as i64);
    d.insert("batch_size", a.batch_size as i64);
    d.insert("lr", a.lr.map(Value::Float).unwrap_or(Value::None));
    d.insert(
        "optimizer",
        opt(a.optimizer.map(|o| format!("{o:?}").to_lowercase())),
    );
    d.insert(
        "scheduler",
        opt(a.scheduler.map(|s| format!("{s:?}").to_lowercase())),
    );
    d.insert("label_smoothing", a.label_smoothing);
    d.insert("seed", a.seed as i64);
    d.insert("train_size", a.train_size as i64);
    d.insert("val_size", a.val_size as i64);
    d.insert(
        "init_from",
        opt(a.init_from.as_ref().map(|p| p.display().to_string())),
    );
    Value::Dict(d)
}
