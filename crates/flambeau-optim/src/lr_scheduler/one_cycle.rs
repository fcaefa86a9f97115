//! `OneCycleLR`.

use std::f64::consts::PI;

use super::{field, field_i64, Schedule, SchedulerState};
use crate::validate::{self, py_float};
use crate::ParamGroup;
use flambeau_core::value::{Dict, DictKind, Value};
use flambeau_core::{Error, Result};

/// How OneCycleLR interpolates within a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnnealStrategy {
    /// Cosine annealing (PyTorch's default).
    Cos,
    /// Linear annealing.
    Linear,
}

impl AnnealStrategy {
    fn apply(self, start: f64, end: f64, pct: f64) -> f64 {
        match self {
            AnnealStrategy::Cos => {
                let cos_out = (PI * pct).cos() + 1.0;
                end + (start - end) / 2.0 * cos_out
            }
            AnnealStrategy::Linear => (end - start) * pct + start,
        }
    }

    fn name(self) -> &'static str {
        match self {
            AnnealStrategy::Cos => "cos",
            AnnealStrategy::Linear => "linear",
        }
    }
}

#[derive(Debug, Clone)]
struct Phase {
    /// PyTorch keeps the last phase's end as an int and the others as floats.
    end_step: Value,
    start_lr: &'static str,
    end_lr: &'static str,
    start_momentum: &'static str,
    end_momentum: &'static str,
}

impl Phase {
    fn end(&self) -> f64 {
        self.end_step.as_f64().unwrap_or(0.0)
    }
}

/// The 1cycle policy: warm up to `max_lr`, then anneal far below the start, cycling momentum
/// (SGD's `momentum` or Adam's `beta1`) the other way.
#[derive(Debug, Clone)]
pub struct OneCycleLr {
    /// Peak learning rate per group (one value for all groups, or one per group).
    pub max_lr: Vec<f64>,
    /// Total number of steps of the cycle.
    pub total_steps: i64,
    /// Fraction of the cycle spent increasing the learning rate.
    pub pct_start: f64,
    /// Interpolation within a phase.
    pub anneal_strategy: AnnealStrategy,
    /// Cycle momentum inversely to the learning rate.
    pub cycle_momentum: bool,
    /// Lowest momentum (at peak learning rate).
    pub base_momentum: f64,
    /// Highest momentum.
    pub max_momentum: f64,
    /// `initial_lr = max_lr / div_factor`.
    pub div_factor: f64,
    /// `min_lr = initial_lr / final_div_factor`.
    pub final_div_factor: f64,
    /// Use three phases (up, down to the start, annihilate) instead of two.
    pub three_phase: bool,
    use_beta1: bool,
}

impl OneCycleLr {
    /// PyTorch's defaults for everything but `max_lr` and `total_steps`.
    pub fn new(max_lr: Vec<f64>, total_steps: i64) -> Self {
        Self {
            max_lr,
            total_steps,
            pct_start: 0.3,
            anneal_strategy: AnnealStrategy::Cos,
            cycle_momentum: true,
            base_momentum: 0.85,
            max_momentum: 0.95,
            div_factor: 25.0,
            final_div_factor: 1e4,
            three_phase: false,
            use_beta1: false,
        }
    }

    fn phases(&self) -> Vec<Phase> {
        let total = self.total_steps as f64;
        let last = Value::Int(self.total_steps - 1);
        if self.three_phase {
            vec![
                Phase {
                    end_step: Value::Float(self.pct_start * total - 1.0),
                    start_lr: "initial_lr",
                    end_lr: "max_lr",
                    start_momentum: "max_momentum",
                    end_momentum: "base_momentum",
                },
                Phase {
                    end_step: Value::Float(2.0 * self.pct_start * total - 2.0),
                    start_lr: "max_lr",
                    end_lr: "initial_lr",
                    start_momentum: "base_momentum",
                    end_momentum: "max_momentum",
                },
                Phase {
                    end_step: last,
                    start_lr: "initial_lr",
                    end_lr: "min_lr",
                    start_momentum: "max_momentum",
                    end_momentum: "max_momentum",
                },
            ]
        } else {
            vec![
                Phase {
                    end_step: Value::Float(self.pct_start * total - 1.0),
                    start_lr: "initial_lr",
                    end_lr: "max_lr",
                    start_momentum: "max_momentum",
                    end_momentum: "base_momentum",
                },
                Phase {
                    end_step: last,
                    start_lr: "max_lr",
                    end_lr: "min_lr",
                    start_momentum: "base_momentum",
                    end_momentum: "max_momentum",
                },
            ]
        }
    }

    fn max_lr_for(&self, group: usize, groups: usize) -> Result<f64> {
        match self.max_lr.len() {
            1 => Ok(self.max_lr[0]),
            n if n == groups => Ok(self.max_lr[group]),
            n => Err(Error::invalid_argument(
                "max_lr",
                format!("expected 1 or {groups} values for max_lr, got {n}"),
            )),
        }
    }
}

fn set_momentum(g: &mut ParamGroup, use_beta1: bool, m: f64) {
    if use_beta1 {
        let beta2 = match g.options.get("betas").and_then(Value::as_seq) {
            Some([_, b2]) => b2.clone(),
            _ => Value::Float(0.999),
        };
        g.set("betas", Value::Tuple(vec![Value::Float(m), beta2]));
    } else {
        g.set("momentum", m);
    }
}

impl Schedule for OneCycleLr {
    fn prepare(&mut self, groups: &mut [ParamGroup], uses_betas: bool) -> Result<()> {
        if self.total_steps <= 0 {
            return Err(Error::invalid_argument(
                "total_steps",
                format!(
                    "Expected positive integer total_steps, but got {}",
                    self.total_steps
                ),
            ));
        }
        if !(0.0..=1.0).contains(&self.pct_start) {
            return Err(Error::invalid_argument(
                "pct_start",
                format!(
                    "Expected float between 0 and 1 pct_start, but got {}",
                    py_float(self.pct_start)
                ),
            ));
        }
        for &lr in &self.max_lr {
            validate::non_negative("max_lr", "Invalid max_lr value", lr)?;
        }
        validate::positive("div_factor", "Invalid div_factor value", self.div_factor)?;
        validate::positive(
            "final_div_factor",
            "Invalid final_div_factor value",
            self.final_div_factor,
        )?;
        if self.cycle_momentum {
            validate::non_negative(
                "base_momentum",
                "Invalid base_momentum value",
                self.base_momentum,
            )?;
            validate::non_negative(
                "max_momentum",
                "Invalid max_momentum value",
                self.max_momentum,
            )?;
        }
        self.use_beta1 = uses_betas;
        let n = groups.len();
        for (i, g) in groups.iter_mut().enumerate() {
            let max_lr = self.max_lr_for(i, n)?;
            let initial = max_lr / self.div_factor;
            g.set("initial_lr", initial);
            g.set("max_lr", max_lr);
            g.set("min_lr", initial / self.final_div_factor);
            if self.cycle_momentum {
                set_momentum(g, self.use_beta1, self.max_momentum);
                g.set("max_momentum", self.max_momentum);
                g.set("base_momentum", self.base_momentum);
            }
        }
        Ok(())
    }

    fn get_lr(&self, s: &SchedulerState, groups: &mut [ParamGroup]) -> Result<Vec<f64>> {
        let step = s.last_epoch as f64;
        if s.last_epoch > self.total_steps {
            return Err(Error::StepsExhausted {
                step: s.last_epoch,
                total_steps: self.total_steps,
            });
        }
        let phases = self.phases();
        let mut out = Vec::with_capacity(groups.len());
        for g in groups.iter_mut() {
            let mut start_step = 0.0;
            for (i, phase) in phases.iter().enumerate() {
                let end_step = phase.end();
                if step <= end_step || i == phases.len() - 1 {
                    let pct = (step - start_step) / (end_step - start_step);
                    let lr = self.anneal_strategy.apply(
                        g.get_f64(phase.start_lr)?,
                        g.get_f64(phase.end_lr)?,
                        pct,
                    );
                    out.push(lr);
                    if self.cycle_momentum {
                        let m = self.anneal_strategy.apply(
                            g.get_f64(phase.start_momentum)?,
                            g.get_f64(phase.end_momentum)?,
                            pct,
                        );
                        set_momentum(g, self.use_beta1, m);
                    }
                    break;
                }
                start_step = end_step;
            }
        }
        Ok(out)
    }

    fn fields(&self) -> Vec<(&'static str, Value)> {
        let phases = self
            .phases()
            .into_iter()
            .map(|p| {
                let mut d = Dict::new(DictKind::Plain);
                d.insert("end_step", p.end_step);
                d.insert("start_lr", p.start_lr);
                d.insert("end_lr", p.end_lr);
                d.insert("start_momentum", p.start_momentum);
                d.insert("end_momentum", p.end_momentum);
                Value::Dict(d)
            })
            .collect();
        vec![
            ("total_steps", self.total_steps.into()),
            ("_schedule_phases", Value::List(phases)),
            ("_anneal_func_type", self.anneal_strategy.name().into()),
            ("cycle_momentum", self.cycle_momentum.into()),
            ("use_beta1", self.use_beta1.into()),
        ]
    }

    fn load_fields(&mut self, d: &Dict) -> Result<()> {
        self.total_steps = field_i64(d, "total_steps")?;
        self.anneal_strategy = match field(d, "_anneal_func_type")?.as_str() {
            Some("cos") => AnnealStrategy::Cos,
            Some("linear") => AnnealStrategy::Linear,
            other => {
                return Err(Error::invalid_state(
                    "scheduler",
                    format!("unknown OneCycleLR anneal strategy {other:?}"),
                ))
            }
        };
        self.cycle_momentum = field(d, "cycle_momentum")?.as_bool().unwrap_or(true);
        self.use_beta1 = field(d, "use_beta1")?.as_bool().unwrap_or(false);
        // The phase boundaries determine pct_start and three_phase.
        let phases = field(d, "_schedule_phases")?.as_seq().unwrap_or(&[]);
        self.three_phase = phases.len() == 3;
        if let Some(end) = phases
            .first()
            .and_then(|p| p.get("end_step"))
            .and_then(Value::as_f64)
        {
            self.pct_start = (end + 1.0) / self.total_steps as f64;
        }
        Ok(())
    }
}
