//! `LinearLR` (linear warm-up).

use super::{check_steps, field_f64, field_i64, lrs, Schedule, SchedulerState};
use crate::validate::py_float;
use crate::ParamGroup;
use flambeau_core::value::{Dict, Value};
use flambeau_core::{Error, Result};

/// Scales the learning rate linearly from `start_factor` to `end_factor` over `total_iters` steps.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearLr {
    /// Factor at step 0, in (0, 1].
    pub start_factor: f64,
    /// Factor from `total_iters` on, in [0, 1].
    pub end_factor: f64,
    /// Length of the ramp.
    pub total_iters: i64,
}

impl LinearLr {
    /// Checks the factors as PyTorch does.
    pub fn new(start_factor: f64, end_factor: f64, total_iters: i64) -> Result<Self> {
        let s = Self {
            start_factor,
            end_factor,
            total_iters,
        };
        s.validate()?;
        Ok(s)
    }
}

impl Schedule for LinearLr {
    fn validate(&self) -> Result<()> {
        // Written so that NaN fails (PyTorch's `start_factor > 1.0 or start_factor <= 0` lets it in).
        if !(self.start_factor > 0.0 && self.start_factor <= 1.0) {
            return Err(Error::invalid_argument(
                "start_factor",
                format!(
                    "Starting multiplicative factor expected to be greater than 0 and less or equal to 1, got {}.",
                    py_float(self.start_factor)
                ),
            ));
        }
        if !(0.0..=1.0).contains(&self.end_factor) {
            return Err(Error::invalid_argument(
                "end_factor",
                format!(
                    "Ending multiplicative factor expected to be between 0 and 1, got {}.",
                    py_float(self.end_factor)
                ),
            ));
        }
        check_steps("total_iters", self.total_iters)
    }

    fn get_lr(&self, s: &SchedulerState, groups: &mut [ParamGroup]) -> Result<Vec<f64>> {
        let (a, b, n) = (self.start_factor, self.end_factor, self.total_iters);
        if s.last_epoch == 0 {
            return Ok(groups.iter().map(|g| g.lr() * a).collect());
        }
        if s.is_initial || s.last_epoch > n {
            return Ok(lrs(groups));
        }
        let factor = 1.0 + (b - a) / (n as f64 * a + (s.last_epoch - 1) as f64 * (b - a));
        Ok(groups.iter().map(|g| g.lr() * factor).collect())
    }

    fn closed_form_lr(&self, s: &SchedulerState) -> Option<Vec<f64>> {
        let (a, b, n) = (self.start_factor, self.end_factor, self.total_iters);
        let done = n.min(s.last_epoch) as f64;
        Some(
            s.base_lrs
                .iter()
                .map(|base| base * (a + (b - a) * done / n as f64))
                .collect(),
        )
    }

    fn fields(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("start_factor", self.start_factor.into()),
            ("end_factor", self.end_factor.into()),
            ("total_iters", self.total_iters.into()),
        ]
    }

    fn load_fields(&mut self, d: &Dict) -> Result<()> {
        self.start_factor = field_f64(d, "start_factor")?;
        self.end_factor = field_f64(d, "end_factor")?;
        self.total_iters = field_i64(d, "total_iters")?;
        Ok(())
    }
}
