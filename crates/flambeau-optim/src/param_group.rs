//! [`ParamGroup`]: parameters sharing hyper-parameters.

use candle_core::Var;
use regex::Regex;

use flambeau_core::value::{Dict, DictKind, Value};
use flambeau_core::{Error, Result, VarStore};

/// Parameters that share hyper-parameters (PyTorch's `param_groups[i]`).
///
/// `options` holds every key PyTorch keeps in the group (`lr`, `momentum`, … and whatever a
/// scheduler or a loaded state dict added, such as `initial_lr`) in PyTorch's order; values a
/// group does not set are filled from the optimizer's defaults when the optimizer is built.
#[derive(Debug, Clone)]
pub struct ParamGroup {
    /// The parameters, in the order their state is numbered.
    pub params: Vec<Var>,
    /// Hyper-parameters and extra keys.
    pub options: Dict,
}

impl ParamGroup {
    /// A group using the optimizer's defaults.
    pub fn new(params: Vec<Var>) -> Self {
        Self {
            params,
            options: Dict::new(DictKind::Plain),
        }
    }

    /// Overrides one hyper-parameter for this group (`.with("lr", 1e-3)`).
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.options.insert(key, value);
        self
    }

    /// A numeric hyper-parameter.
    pub fn get_f64(&self, key: &str) -> Result<f64> {
        self.options
            .get(key)
            .and_then(Value::as_f64)
            .ok_or_else(|| {
                Error::invalid_argument(key, format!("param group has no numeric `{key}`"))
            })
    }

    /// A boolean hyper-parameter (missing or None counts as false).
    pub fn get_bool(&self, key: &str) -> bool {
        self.options
            .get(key)
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    /// Sets (or adds) a key.
    pub fn set(&mut self, key: &str, value: impl Into<Value>) {
        self.options.insert(key, value);
    }

    /// The learning rate.
    pub fn lr(&self) -> f64 {
        self.get_f64("lr").unwrap_or(0.0)
    }

    /// Sets the learning rate.
    pub fn set_lr(&mut self, lr: f64) {
        self.set("lr", lr);
    }

    /// Fills the keys this group lacks from `defaults`, in the defaults' order, keeping the
    /// group's own values (PyTorch's `param_group.setdefault`); the group's own extra keys follow.
    pub(crate) fn fill_defaults(&mut self, defaults: &Dict) {
        let mut merged = Dict::new(DictKind::Plain);
        for (k, v) in &defaults.entries {
            let own = k.as_str().and_then(|k| self.options.get(k)).cloned();
            merged
                .entries
                .push((k.clone(), own.unwrap_or_else(|| v.clone())));
        }
        for (k, v) in &self.options.entries {
            if merged.get_value(k).is_none() {
                merged.entries.push((k.clone(), v.clone()));
            }
        }
        self.options = merged;
    }
}

/// Splits a model's parameters into groups by name: group `i` holds the parameters whose name
/// matches `patterns[i]` (first match wins), and a last group holds the rest. E.g.
/// `split_by_name(&vs, &["^fc\\."])` → `[head, backbone]`.
pub fn split_by_name(vs: &VarStore, patterns: &[&str]) -> Result<Vec<ParamGroup>> {
    let regexes = patterns
        .iter()
        .map(|p| {
            Regex::new(p).map_err(|source| Error::Regex {
                pattern: p.to_string(),
                source,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut groups: Vec<Vec<Var>> = vec![Vec::new(); patterns.len() + 1];
    for (name, var) in vs.named_parameters() {
        let i = regexes
            .iter()
            .position(|r| r.is_match(&name))
            .unwrap_or(patterns.len());
        groups[i].push(var);
    }
    Ok(groups.into_iter().map(ParamGroup::new).collect())
}
