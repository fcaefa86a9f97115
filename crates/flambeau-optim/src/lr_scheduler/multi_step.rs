//! `MultiStepLR`.

use super::{check_gamma, field, field_f64, lrs, Schedule, SchedulerState};
use crate::ParamGroup;
use flambeau_core::value::{Dict, DictKind, Value};
use flambeau_core::{Error, Result};

/// Multiplies the learning rate by `gamma` at each milestone (a milestone listed twice applies
/// `gamma²`, as PyTorch's `Counter` does).
#[derive(Debug, Clone, PartialEq)]
pub struct MultiStepLr {
    /// `(milestone, count)` in first-seen order (PyTorch's `Counter`).
    milestones: Vec<(i64, i64)>,
    /// Decay factor.
    pub gamma: f64,
}

impl MultiStepLr {
    /// Decays by `gamma` at every milestone.
    pub fn new(milestones: &[i64], gamma: f64) -> Self {
        let mut counted: Vec<(i64, i64)> = Vec::new();
        for &m in milestones {
            match counted.iter_mut().find(|(k, _)| *k == m) {
                Some((_, c)) => *c += 1,
                None => counted.push((m, 1)),
            }
        }
        Self {
            milestones: counted,
            gamma,
        }
    }

    fn count(&self, epoch: i64) -> Option<i64> {
        self.milestones
            .iter()
            .find(|(m, _)| *m == epoch)
            .map(|(_, c)| *c)
    }
}

impl Schedule for MultiStepLr {
    fn validate(&self) -> Result<()> {
        check_gamma(self.gamma)
    }

    fn get_lr(&self, s: &SchedulerState, groups: &mut [ParamGroup]) -> Result<Vec<f64>> {
        match self.count(s.last_epoch) {
            None => Ok(lrs(groups)),
            Some(c) => Ok(groups
                .iter()
                .map(|g| g.lr() * self.gamma.powi(c as i32))
                .collect()),
        }
    }

    fn closed_form_lr(&self, s: &SchedulerState) -> Option<Vec<f64>> {
        let passed: i64 = self
            .milestones
            .iter()
            .filter(|(m, _)| *m <= s.last_epoch)
            .map(|(_, c)| c)
            .sum();
        Some(
            s.base_lrs
                .iter()
                .map(|b| b * self.gamma.powi(passed as i32))
                .collect(),
        )
    }

    fn fields(&self) -> Vec<(&'static str, Value)> {
        let mut counter = Dict::new(DictKind::Counter);
        for (m, c) in &self.milestones {
            counter.entries.push((Value::Int(*m), Value::Int(*c)));
        }
        vec![
            ("milestones", Value::Dict(counter)),
            ("gamma", self.gamma.into()),
        ]
    }

    fn load_fields(&mut self, d: &Dict) -> Result<()> {
        let bad = || {
            Error::invalid_state(
                "scheduler",
                "MultiStepLR `milestones` must map ints to counts",
            )
        };
        let counter = field(d, "milestones")?.as_dict().ok_or_else(bad)?;
        self.milestones = counter
            .entries
            .iter()
            .map(|(k, v)| Some((k.as_i64()?, v.as_i64()?)))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(bad)?;
        self.gamma = field_f64(d, "gamma")?;
        Ok(())
    }
}
