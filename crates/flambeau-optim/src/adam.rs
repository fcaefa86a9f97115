//! `torch.optim.Adam` and `torch.optim.AdamW` (single-tensor implementation, same order of
//! operations): bias correction with `step`, AMSGrad, and AdamW's decoupled weight decay.

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor};

use crate::state_dict;
use crate::validate;
use crate::{Optimizer, ParamGroup};
use flambeau_core::value::{Dict, DictKind, Value};
use flambeau_core::{Error, Result};

/// Default hyper-parameters of [`Adam`]; `AdamConfig::adamw()` gives AdamW's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamConfig {
    /// Learning rate.
    pub lr: f64,
    /// Decay rates of the first and second moment estimates.
    pub betas: (f64, f64),
    /// Added to the denominator.
    pub eps: f64,
    /// Weight decay: L2 in the gradient (Adam) or decoupled (AdamW).
    pub weight_decay: f64,
    /// AMSGrad: use the running maximum of the second moment.
    pub amsgrad: bool,
    /// Maximise the objective instead of minimising it.
    pub maximize: bool,
    /// Decoupled weight decay (AdamW): `param *= 1 - lr·weight_decay` before the update.
    pub decoupled_weight_decay: bool,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            amsgrad: false,
            maximize: false,
            decoupled_weight_decay: false,
        }
    }
}

impl AdamConfig {
    /// AdamW's defaults (weight decay 0.01, decoupled).
    pub fn adamw() -> Self {
        Self {
            weight_decay: 1e-2,
            decoupled_weight_decay: true,
            ..Self::default()
        }
    }

    fn defaults(&self) -> Dict {
        let mut d = Dict::new(DictKind::Plain);
        d.insert("lr", self.lr);
        d.insert(
            "betas",
            Value::Tuple(vec![Value::Float(self.betas.0), Value::Float(self.betas.1)]),
        );
        d.insert("eps", self.eps);
        d.insert("weight_decay", self.weight_decay);
        d.insert("amsgrad", self.amsgrad);
        d.insert("maximize", self.maximize);
        d.insert("foreach", Value::None);
        d.insert("capturable", false);
        d.insert("differentiable", false);
        d.insert("fused", Value::None);
        d.insert("decoupled_weight_decay", self.decoupled_weight_decay);
        d
    }
}

#[derive(Debug, Clone)]
struct AdamState {
    step: f64,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    max_exp_avg_sq: Option<Tensor>,
}

/// Adam / AdamW.
#[derive(Debug)]
pub struct Adam {
    groups: Vec<ParamGroup>,
    states: Vec<Option<AdamState>>,
}

fn betas(g: &ParamGroup) -> Result<(f64, f64)> {
    match g.options.get("betas").and_then(Value::as_seq) {
        Some([a, b]) => match (a.as_f64(), b.as_f64()) {
            (Some(a), Some(b)) => Ok((a, b)),
            _ => Err(Error::invalid_argument(
                "betas",
                "`betas` must be two numbers",
            )),
        },
        _ => Err(Error::invalid_argument(
            "betas",
            "param group has no `betas` pair",
        )),
    }
}

/// PyTorch's constructor checks, applied to one group's options.
fn check_group(options: &Dict) -> Result<()> {
    let g = ParamGroup {
        params: Vec::new(),
        options: options.clone(),
    };
    validate::non_negative("lr", "Invalid learning rate", g.get_f64("lr")?)?;
    validate::non_negative("eps", "Invalid epsilon value", g.get_f64("eps")?)?;
    let (b1, b2) = betas(&g)?;
    validate::unit_interval("betas", "Invalid beta parameter at index 0", b1)?;
    validate::unit_interval("betas", "Invalid beta parameter at index 1", b2)?;
    validate::non_negative(
        "weight_decay",
        "Invalid weight_decay value",
        g.get_f64("weight_decay")?,
    )
}

/// `t / s` as a true division (PyTorch divides by the scalar; candle's `/ f64` multiplies by
/// the reciprocal, which rounds differently).
fn div_scalar(t: &Tensor, s: f64) -> Result<Tensor> {
    let s = Tensor::new(s, &Device::Cpu)?
        .to_dtype(t.dtype())?
        .to_device(t.device())?;
    Ok(t.broadcast_div(&s)?)
}

/// `torch.lerp(start, end, weight)` with PyTorch's two-sided formula.
fn lerp(start: &Tensor, end: &Tensor, weight: f64) -> Result<Tensor> {
    let diff = (end - start)?;
    Ok(if weight < 0.5 {
        (start + diff.affine(weight, 0.0)?)?
    } else {
        (end - diff.affine(1.0 - weight, 0.0)?)?
    })
}

impl Adam {
    /// Adam over `groups`, filling each group's missing hyper-parameters from `config`.
    /// Every group's `lr`, `eps`, `betas` and `weight_decay` is checked as PyTorch's constructor
    /// checks the defaults (`Invalid beta parameter at index 0: 1.0`), NaN and infinity refused.
    pub fn new(mut groups: Vec<ParamGroup>, config: AdamConfig) -> Result<Self> {
        let defaults = config.defaults();
        check_group(&defaults)?;
        for g in &mut groups {
            g.fill_defaults(&defaults);
            check_group(&g.options)?;
        }
        let n = groups.iter().map(|g| g.params.len()).sum();
        Ok(Self {
            groups,
            states: vec![None; n],
        })
    }

    /// AdamW (decoupled weight decay) with `config` (start from [`AdamConfig::adamw`]).
    pub fn adamw(groups: Vec<ParamGroup>, config: AdamConfig) -> Result<Self> {
        Self::new(
            groups,
            AdamConfig {
                decoupled_weight_decay: true,
                ..config
            },
        )
    }
}

impl Optimizer for Adam {
    fn param_groups(&self) -> &[ParamGroup] {
        &self.groups
    }

    fn param_groups_mut(&mut self) -> &mut [ParamGroup] {
        &mut self.groups
    }

    fn uses_betas(&self) -> bool {
        true
    }

    fn step(&mut self, grads: &GradStore) -> Result<()> {
        let mut index = 0;
        for g in &self.groups {
            let lr = g.get_f64("lr")?;
            let (beta1, beta2) = betas(g)?;
            let eps = g.get_f64("eps")?;
            let weight_decay = g.get_f64("weight_decay")?;
            let amsgrad = g.get_bool("amsgrad");
            let maximize = g.get_bool("maximize");
            let decoupled = g.get_bool("decoupled_weight_decay");
            for p in &g.params {
                let i = index;
                index += 1;
                let Some(grad) = grads.get(p.as_tensor()) else {
                    continue;
                };
                let mut grad = grad.detach();
                if maximize {
                    grad = grad.neg()?;
                }
                let mut param = p.as_tensor().detach();
                let st = self.states[i].get_or_insert_with(|| AdamState {
                    step: 0.0,
                    exp_avg: param.zeros_like().expect("zeros"),
                    exp_avg_sq: param.zeros_like().expect("zeros"),
                    max_exp_avg_sq: amsgrad.then(|| param.zeros_like().expect("zeros")),
                });
                st.step += 1.0;
                if weight_decay != 0.0 {
                    if decoupled {
                        param = param.affine(1.0 - lr * weight_decay, 0.0)?;
                    } else {
                        grad = (grad + param.affine(weight_decay, 0.0)?)?;
                    }
                }
                st.exp_avg = lerp(&st.exp_avg, &grad, 1.0 - beta1)?;
                st.exp_avg_sq = (st.exp_avg_sq.affine(beta2, 0.0)?
                    + (grad.affine(1.0 - beta2, 0.0)? * &grad)?)?;
                let bias_correction1 = 1.0 - beta1.powf(st.step);
                let bias_correction2 = 1.0 - beta2.powf(st.step);
                let step_size = lr / bias_correction1;
                let bias_correction2_sqrt = bias_correction2.sqrt();
                let second = if amsgrad {
                    let prev = st
                        .max_exp_avg_sq
                        .get_or_insert_with(|| st.exp_avg_sq.zeros_like().expect("zeros"));
                    *prev = prev.maximum(&st.exp_avg_sq)?;
                    prev.clone()
                } else {
                    st.exp_avg_sq.clone()
                };
                let denom = div_scalar(&second.sqrt()?, bias_correction2_sqrt)?.affine(1.0, eps)?;
                let update = (st.exp_avg.affine(-step_size, 0.0)? / denom)?;
                p.set(&(param + update)?)?;
            }
        }
        Ok(())
    }

    fn state_dict(&self) -> Value {
        let state = self
            .states
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let s = s.as_ref()?;
                let mut d = Dict::new(DictKind::Plain);
                let step = Tensor::new(s.step as f32, &Device::Cpu).ok()?;
                d.insert("step", step);
                d.insert("exp_avg", s.exp_avg.clone());
                d.insert("exp_avg_sq", s.exp_avg_sq.clone());
                if let Some(m) = &s.max_exp_avg_sq {
                    d.insert("max_exp_avg_sq", m.clone());
                }
                Some((i, d))
            })
            .collect();
        state_dict::build(&self.groups, state)
    }

    fn load_state_dict(&mut self, value: &Value) -> Result<()> {
        let loaded = state_dict::parse(&self.groups, value)?;
        let params: Vec<_> = self.groups.iter().flat_map(|g| g.params.clone()).collect();
        let mut states = vec![None; params.len()];
        for (i, (s, p)) in loaded.state.iter().zip(&params).enumerate() {
            let Some(s) = s else { continue };
            let missing = |k: &str| {
                Error::invalid_state(
                    "optimizer",
                    format!("Adam state of parameter {i} has no `{k}`"),
                )
            };
            states[i] = Some(AdamState {
                step: state_dict::step_count(s)?,
                exp_avg: state_dict::tensor_for(s, "exp_avg", p)?
                    .ok_or_else(|| missing("exp_avg"))?,
                exp_avg_sq: state_dict::tensor_for(s, "exp_avg_sq", p)?
                    .ok_or_else(|| missing("exp_avg_sq"))?,
                max_exp_avg_sq: state_dict::tensor_for(s, "max_exp_avg_sq", p)?,
            });
        }
        for (g, opts) in self.groups.iter_mut().zip(loaded.group_options) {
            g.options = opts;
        }
        self.states = states;
        Ok(())
    }
}
