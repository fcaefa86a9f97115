//! [`LoaderState`] as a checkpoint entry: `{'seed': …, 'epoch': …, 'batch': …}`, readable in
//! Python and stored as a training checkpoint's `data_state`.

use flambeau_core::{Dict, DictKind, Value};

use super::LoaderState;

impl LoaderState {
    /// `{'seed': …, 'epoch': …, 'batch': …}`.
    pub fn to_value(self) -> Value {
        let mut d = Dict::new(DictKind::Plain);
        d.insert("seed", self.seed as i64);
        d.insert("epoch", self.epoch as i64);
        d.insert("batch", self.batch as i64);
        Value::Dict(d)
    }

    /// The position [`LoaderState::to_value`] stored; `None` when an entry is missing or
    /// negative (e.g. a checkpoint written by another program).
    pub fn from_value(v: &Value) -> Option<Self> {
        let field = |k: &str| v.get(k)?.as_i64().filter(|x| *x >= 0).map(|x| x as u64);
        Some(Self {
            seed: field("seed")?,
            epoch: field("epoch")?,
            batch: field("batch")?,
        })
    }
}
