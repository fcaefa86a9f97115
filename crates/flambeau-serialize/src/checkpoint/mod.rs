//! [`Checkpoint`]: everything a training run needs to continue — model, optimizer, scheduler,
//! epoch, step, data order, best metric and user extras — in the layout of the PyTorch tutorial,
//! so that `ckpt = torch.load(path); model.load_state_dict(ckpt['model_state_dict'])` works.
//!
//! Loading also accepts the other layouts people save ([`Layout`]), and [`CheckpointManager`]
//! keeps `last.pth`, `best.pth` and the last K epoch files in a run directory, crash-safely.
//!
//! ```no_run
//! use flambeau_serialize::{Checkpoint, LoadConfig};
//! # fn main() -> flambeau_serialize::Result<()> {
//! let ckpt = Checkpoint::load("runs/exp/last.pth", &LoadConfig::default())?;
//! println!("resume at epoch {} (step {})", ckpt.epoch + 1, ckpt.global_step);
//! # Ok(()) }
//! ```

mod layout;
mod manager;

use std::path::Path;

use flambeau_core::{Dict, DictKind, StateDict, Value};

pub use layout::Layout;
pub use manager::CheckpointManager;

use crate::{find_state_dict, Error, LoadConfig, Result};

/// Keys the [`Checkpoint`] fields are written under (the tutorial's names plus flambeau's).
const KEY_EPOCH: &str = "epoch";
const KEY_GLOBAL_STEP: &str = "global_step";
const KEY_LOSS: &str = "loss";
const KEY_DATA_STATE: &str = "data_state";

/// A training checkpoint.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The model's state dict.
    pub model: StateDict,
    /// `optimizer.state_dict()`, PyTorch's layout.
    pub optimizer: Option<Value>,
    /// `scheduler.state_dict()`, PyTorch's layout.
    pub scheduler: Option<Value>,
    /// Index of the last finished epoch (0-based; -1 when none finished): resume at `epoch + 1`,
    /// as in the PyTorch tutorial. Files in the ImageNet-example layout, which store the number
    /// of finished epochs, are converted on load.
    pub epoch: i64,
    /// Optimizer steps taken since the start of training.
    pub global_step: i64,
    /// The last training loss.
    pub loss: Option<f64>,
    /// The best validation metric so far (higher is better).
    pub best_metric: Option<f64>,
    /// The data order's state (flambeau's loader writes `{'seed', 'epoch', 'batch'}`), so that a
    /// run stopped mid-epoch resumes with the same batches.
    pub data_state: Option<Value>,
    /// Every other top-level entry, in file order (`arch`, `args`, metrics history, …).
    pub extra: Dict,
    /// The layout the checkpoint was read from ([`Layout::Tutorial`] for new ones).
    pub layout: Layout,
}

impl Checkpoint {
    /// The training-state keys [`Checkpoint::to_value`] writes, in file order, before the
    /// extras: the tutorial's names plus `global_step`, `best_metric` and `data_state` (keys
    /// whose field is `None` are left out).
    pub const STATE_KEYS: [&'static str; 8] = [
        KEY_EPOCH,
        KEY_GLOBAL_STEP,
        "model_state_dict",
        "optimizer_state_dict",
        "scheduler_state_dict",
        KEY_LOSS,
        "best_metric",
        KEY_DATA_STATE,
    ];

    /// A checkpoint holding only model weights, at epoch -1 (nothing trained yet).
    pub fn new(model: StateDict) -> Self {
        Self {
            model,
            optimizer: None,
            scheduler: None,
            epoch: -1,
            global_step: 0,
            loss: None,
            best_metric: None,
            data_state: None,
            extra: Dict::new(DictKind::Plain),
            layout: Layout::Tutorial,
        }
    }

    /// The checkpoint as the dict `torch.save` would be given, in the tutorial's layout.
    pub fn to_value(&self) -> Value {
        let mut d = Dict::new(DictKind::Plain);
        d.insert(KEY_EPOCH, self.epoch);
        d.insert(KEY_GLOBAL_STEP, self.global_step);
        d.insert("model_state_dict", self.model.to_value());
        if let Some(o) = &self.optimizer {
            d.insert("optimizer_state_dict", o.clone());
        }
        if let Some(s) = &self.scheduler {
            d.insert("scheduler_state_dict", s.clone());
        }
        if let Some(l) = self.loss {
            d.insert(KEY_LOSS, l);
        }
        if let Some(b) = self.best_metric {
            d.insert("best_metric", b);
        }
        if let Some(s) = &self.data_state {
            d.insert(KEY_DATA_STATE, s.clone());
        }
        for (k, v) in &self.extra.entries {
            d.insert(k.clone(), v.clone());
        }
        Value::Dict(d)
    }

    /// Reads a checkpoint from a loaded file, whatever its [`Layout`]. A file that holds only a
    /// state dict gives a checkpoint without training state; a file without any state dict is
    /// an error that lists its top-level keys.
    pub fn from_value(value: &Value) -> Result<Self> {
        let Some(d) = value.as_dict().filter(|d| !is_bare_state_dict(d)) else {
            let found = find_state_dict(value)?;
            let mut ckpt = Checkpoint::new(found.state_dict);
            ckpt.layout = Layout::WeightsOnly;
            return Ok(ckpt);
        };
        let layout = Layout::detect(d);
        let model = match layout {
            Layout::WeightsOnly => find_state_dict(value)?,
            _ => {
                let inner = d.get(layout.model_key()).expect("detected by its key");
                find_state_dict(inner).map_err(|e| {
                    Error::checkpoint(format!(
                        "`{}` of this {} holds no state dict: {e}",
                        layout.model_key(),
                        layout.describe()
                    ))
                })?
            }
        };
        let mut used: Vec<&str> = vec![KEY_EPOCH, KEY_GLOBAL_STEP, KEY_LOSS, KEY_DATA_STATE];
        if layout == Layout::WeightsOnly {
            used.push(location_key(&model.location, d));
        } else {
            used.push(layout.model_key());
        }
        let optimizer = training_state(d, &layout.optimizer_keys(), &mut used);
        let scheduler = training_state(d, &layout.scheduler_keys(), &mut used);
        let best_key = layout.best_metric_key();
        used.push(best_key);
        let epoch = match d.get(KEY_EPOCH) {
            None => -1,
            Some(v) => layout.last_finished_epoch(number(v, KEY_EPOCH)? as i64),
        };
        let extra = Dict {
            kind: DictKind::Plain,
            entries: d
                .entries
                .iter()
                .filter(|(k, _)| !k.as_str().is_some_and(|k| used.contains(&k)))
                .cloned()
                .collect(),
            attrs: None,
        };
        Ok(Self {
            model: model.state_dict,
            optimizer,
            scheduler,
            epoch,
            global_step: match d.get(KEY_GLOBAL_STEP) {
                Some(v) => number(v, KEY_GLOBAL_STEP)? as i64,
                None => 0,
            },
            loss: d.get(KEY_LOSS).map(|v| number(v, KEY_LOSS)).transpose()?,
            best_metric: d.get(best_key).map(|v| number(v, best_key)).transpose()?,
            data_state: d.get(KEY_DATA_STATE).cloned(),
            extra,
            layout,
        })
    }

    /// Loads a checkpoint file onto `config.device`: a `.pth` (zip or legacy) in any layout
    /// [`Layout`] knows, or a `.safetensors` file (weights only: epoch -1, no optimizer).
    pub fn load(path: impl AsRef<Path>, config: &LoadConfig) -> Result<Self> {
        let path = path.as_ref();
        if path.extension().is_some_and(|e| e == "safetensors") {
            return Ok(Self::new(crate::safetensors::load(path, &config.device)?));
        }
        let value = crate::load(path, config)?;
        Self::from_value(&value).map_err(|e| match e {
            Error::NoStateDict(message)
            | Error::Checkpoint {
                path: None,
                message,
            } => Error::Checkpoint {
                path: Some(path.to_path_buf()),
                message,
            },
            other => other,
        })
    }

    /// Saves atomically in the tutorial's layout (see [`crate::save`]).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        crate::save(&self.to_value(), path)
    }
}

fn is_bare_state_dict(d: &Dict) -> bool {
    !d.is_empty() && d.entries.iter().all(|(_, v)| v.as_tensor().is_some())
}

/// The key a weights-only file keeps its state dict under (`""` for none).
fn location_key<'a>(location: &str, d: &'a Dict) -> &'a str {
    d.str_keys().find(|k| *k == location).unwrap_or("")
}

/// The optimizer or scheduler state under the first of `keys` that holds one (a dict, or
/// Lightning's list of dicts, whose first is resumed). Keys holding `None` or an empty list
/// are consumed; keys holding anything else (a name, a number) stay in the extras.
fn training_state<'a>(d: &'a Dict, keys: &[&'a str], used: &mut Vec<&'a str>) -> Option<Value> {
    for &k in keys {
        let state = match d.get(k) {
            None => continue,
            Some(Value::List(l) | Value::Tuple(l)) => l.first(),
            Some(v) => Some(v),
        };
        match state {
            Some(v @ Value::Dict(_)) => {
                used.push(k);
                return Some(v.clone());
            }
            None | Some(Value::None) => used.push(k),
            Some(_) => {}
        }
    }
    None
}

/// An int, float, bool or one-element tensor (`loss` and `best_acc1` are often tensors) as f64.
fn number(v: &Value, key: &str) -> Result<f64> {
    if let Some(x) = v.as_f64() {
        return Ok(x);
    }
    if let Some(t) = v.as_tensor() {
        if t.elem_count() == 1 {
            let x = t
                .flatten_all()
                .and_then(|t| t.to_dtype(candle_core::DType::F64))
                .and_then(|t| t.to_vec1::<f64>())?;
            return Ok(x[0]);
        }
    }
    Err(Error::checkpoint(format!(
        "`{key}` should be a number, the file has a {}",
        v.type_name()
    )))
}
