//! `StepLR`.

use super::{check_gamma, check_steps, field_f64, field_i64, lrs, Schedule, SchedulerState};
use crate::ParamGroup;
use flambeau_core::value::{Dict, Value};
use flambeau_core::Result;

/// Multiplies the learning rate by `gamma` every `step_size` steps.
#[derive(Debug, Clone, PartialEq)]
pub struct StepLr {
    /// Period of the decay.
    pub step_size: i64,
    /// Decay factor.
    pub gamma: f64,
}

impl Schedule for StepLr {
    fn validate(&self) -> Result<()> {
        check_steps("step_size", self.step_size)?;
        check_gamma(self.gamma)
    }

    fn get_lr(&self, s: &SchedulerState, groups: &mut [ParamGroup]) -> Result<Vec<f64>> {
        if s.last_epoch == 0 || s.last_epoch.rem_euclid(self.step_size) != 0 {
            return Ok(lrs(groups));
        }
        Ok(groups.iter().map(|g| g.lr() * self.gamma).collect())
    }

    fn closed_form_lr(&self, s: &SchedulerState) -> Option<Vec<f64>> {
        let k = s.last_epoch.div_euclid(self.step_size) as i32;
        Some(s.base_lrs.iter().map(|b| b * self.gamma.powi(k)).collect())
    }

    fn fields(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("step_size", self.step_size.into()),
            ("gamma", self.gamma.into()),
        ]
    }

    fn load_fields(&mut self, d: &Dict) -> Result<()> {
        self.step_size = field_i64(d, "step_size")?;
        self.gamma = field_f64(d, "gamma")?;
        Ok(())
    }
}
