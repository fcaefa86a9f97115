//! `ExponentialLR`.

use super::{check_gamma, field_f64, lrs, Schedule, SchedulerState};
use crate::ParamGroup;
use flambeau_core::value::{Dict, Value};
use flambeau_core::Result;

/// Multiplies the learning rate by `gamma` every step.
#[derive(Debug, Clone, PartialEq)]
pub struct ExponentialLr {
    /// Decay factor.
    pub gamma: f64,
}

impl Schedule for ExponentialLr {
    fn validate(&self) -> Result<()> {
        check_gamma(self.gamma)
    }

    fn get_lr(&self, s: &SchedulerState, groups: &mut [ParamGroup]) -> Result<Vec<f64>> {
        if s.is_initial {
            return Ok(lrs(groups));
        }
        Ok(groups.iter().map(|g| g.lr() * self.gamma).collect())
    }

    fn closed_form_lr(&self, s: &SchedulerState) -> Option<Vec<f64>> {
        Some(
            s.base_lrs
                .iter()
                .map(|b| b * self.gamma.powi(s.last_epoch as i32))
                .collect(),
        )
    }

    fn fields(&self) -> Vec<(&'static str, Value)> {
        vec![("gamma", self.gamma.into())]
    }

    fn load_fields(&mut self, d: &Dict) -> Result<()> {
        self.gamma = field_f64(d, "gamma")?;
        Ok(())
    }
}
