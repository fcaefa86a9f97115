//! `CosineAnnealingLR`.

use std::f64::consts::PI;

use super::{check_steps, field_f64, field_i64, lrs, Schedule, SchedulerState};
use crate::ParamGroup;
use flambeau_core::value::{Dict, Value};
use flambeau_core::Result;

/// Cosine annealing from the base learning rate down to `eta_min` over `t_max` steps (and back
/// up, periodically, past `t_max`), with PyTorch's recursive formula.
#[derive(Debug, Clone, PartialEq)]
pub struct CosineAnnealingLr {
    /// Half period, in steps.
    pub t_max: i64,
    /// Minimum learning rate.
    pub eta_min: f64,
}

impl Schedule for CosineAnnealingLr {
    fn validate(&self) -> Result<()> {
        check_steps("T_max", self.t_max)?;
        crate::validate::non_negative("eta_min", "Invalid eta_min value", self.eta_min)
    }

    fn get_lr(&self, s: &SchedulerState, groups: &mut [ParamGroup]) -> Result<Vec<f64>> {
        let (t, e, eta) = (self.t_max as f64, s.last_epoch, self.eta_min);
        if s.is_initial {
            return Ok(lrs(groups));
        }
        if s.step_count == 1 && e > 0 {
            return Ok(s
                .base_lrs
                .iter()
                .map(|b| eta + (b - eta) * (1.0 + (e as f64 * PI / t).cos()) / 2.0)
                .collect());
        }
        if (e - 1 - self.t_max).rem_euclid(2 * self.t_max) == 0 {
            return Ok(groups
                .iter()
                .zip(&s.base_lrs)
                .map(|(g, b)| g.lr() + (b - eta) * (1.0 - (PI / t).cos()) / 2.0)
                .collect());
        }
        Ok(groups
            .iter()
            .map(|g| {
                (1.0 + (PI * e as f64 / t).cos()) / (1.0 + (PI * (e - 1) as f64 / t).cos())
                    * (g.lr() - eta)
                    + eta
            })
            .collect())
    }

    fn closed_form_lr(&self, s: &SchedulerState) -> Option<Vec<f64>> {
        let (t, eta) = (self.t_max as f64, self.eta_min);
        Some(
            s.base_lrs
                .iter()
                .map(|b| eta + (b - eta) * (1.0 + (PI * s.last_epoch as f64 / t).cos()) / 2.0)
                .collect(),
        )
    }

    fn fields(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("T_max", self.t_max.into()),
            ("eta_min", self.eta_min.into()),
        ]
    }

    fn load_fields(&mut self, d: &Dict) -> Result<()> {
        self.t_max = field_i64(d, "T_max")?;
        self.eta_min = field_f64(d, "eta_min")?;
        Ok(())
    }
}
