//! `torch.optim.SGD` (single-tensor implementation, same order of operations).

use candle_core::backprop::GradStore;
use candle_core::Tensor;

use crate::state_dict;
use crate::validate;
use crate::{Optimizer, ParamGroup};
use flambeau_core::value::{Dict, DictKind, Value};
use flambeau_core::{Error, Result};
use flambeau_kernels::sgd as sgd_fused;

/// Default hyper-parameters of [`Sgd`] (PyTorch's defaults, with `lr` = 1e-3).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdConfig {
    /// Learning rate.
    pub lr: f64,
    /// Momentum factor (0 = none).
    pub momentum: f64,
    /// Dampening for momentum.
    pub dampening: f64,
    /// L2 penalty added to the gradient.
    pub weight_decay: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// Maximise the objective instead of minimising it.
    pub maximize: bool,
}

impl Default for SgdConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
            maximize: false,
        }
    }
}

impl SgdConfig {
    /// The group keys in PyTorch's order.
    fn defaults(&self) -> Dict {
        let mut d = Dict::new(DictKind::Plain);
        d.insert("lr", self.lr);
        d.insert("momentum", self.momentum);
        d.insert("dampening", self.dampening);
        d.insert("weight_decay", self.weight_decay);
        d.insert("nesterov", self.nesterov);
        d.insert("maximize", self.maximize);
        d.insert("foreach", Value::None);
        d.insert("differentiable", false);
        d.insert("fused", Value::None);
        d
    }
}

fn defaults_group(options: Dict) -> ParamGroup {
    ParamGroup {
        params: Vec::new(),
        options,
    }
}

/// PyTorch's constructor checks, applied to one group's values.
fn check_group(g: &ParamGroup) -> Result<()> {
    validate::non_negative("lr", "Invalid learning rate", g.get_f64("lr")?)?;
    let momentum = g.get_f64("momentum")?;
    validate::non_negative("momentum", "Invalid momentum value", momentum)?;
    validate::non_negative(
        "weight_decay",
        "Invalid weight_decay value",
        g.get_f64("weight_decay")?,
    )?;
    let dampening = g.get_f64("dampening")?;
    validate::finite("dampening", "Invalid dampening value", dampening)?;
    if g.get_bool("nesterov") && (momentum <= 0.0 || dampening != 0.0) {
        return Err(Error::invalid_argument(
            "nesterov",
            format!(
                "Nesterov momentum requires a momentum and zero dampening (got momentum={}, dampening={}); set momentum > 0 and dampening=0, or nesterov=false",
                validate::py_float(momentum),
                validate::py_float(dampening)
            ),
        ));
    }
    Ok(())
}

/// Stochastic gradient descent with momentum, dampening, weight decay and Nesterov, exactly as
/// PyTorch: the first step initialises the momentum buffer to the gradient itself.
#[derive(Debug)]
pub struct Sgd {
    groups: Vec<ParamGroup>,
    /// `momentum_buffer` per parameter, by global index.
    buffers: Vec<Option<Tensor>>,
}

impl Sgd {
    /// An optimizer over `groups`, filling each group's missing hyper-parameters from `config`.
    /// Every group's `lr`, `momentum`, `dampening` and `weight_decay` is checked as PyTorch's
    /// constructor checks the defaults (`Invalid learning rate: nan`), NaN and infinity refused.
    pub fn new(mut groups: Vec<ParamGroup>, config: SgdConfig) -> Result<Self> {
        let defaults = config.defaults();
        check_group(&defaults_group(defaults.clone()))?;
        for g in &mut groups {
            g.fill_defaults(&defaults);
            check_group(g)?;
        }
        let n = groups.iter().map(|g| g.params.len()).sum();
        Ok(Self {
            groups,
            buffers: vec![None; n],
        })
    }
}

impl Optimizer for Sgd {
    fn param_groups(&self) -> &[ParamGroup] {
        &self.groups
    }

    fn param_groups_mut(&mut self) -> &mut [ParamGroup] {
        &mut self.groups
    }

    fn uses_betas(&self) -> bool {
        false
    }

    fn step(&mut self, grads: &GradStore) -> Result<()> {
        let mut index = 0;
        for g in &self.groups {
            let lr = g.get_f64("lr")?;
            let momentum = g.get_f64("momentum")?;
            let dampening = g.get_f64("dampening")?;
            let weight_decay = g.get_f64("weight_decay")?;
            let (nesterov, maximize) = (g.get_bool("nesterov"), g.get_bool("maximize"));
            for p in &g.params {
                let i = index;
                index += 1;
                let Some(grad) = grads.get(p.as_tensor()) else {
                    continue;
                };
                if sgd_fused::supported(p.as_tensor(), grad) {
                    let h = sgd_fused::Hyper {
                        lr: lr as f32,
                        momentum: momentum as f32,
                        one_minus_dampening: (1.0 - dampening) as f32,
                        weight_decay: weight_decay as f32,
                        nesterov,
                        maximize,
                    };
                    let (param, grad) = (p.as_tensor().detach(), grad.detach());
                    let buffer = if momentum != 0.0 {
                        let b =
                            sgd_fused::momentum_buffer(h, &param, &grad, self.buffers[i].clone())?;
                        self.buffers[i] = Some(b.clone());
                        b
                    } else {
                        grad.clone() // not read (and never the parameter: it is updated in place)
                    };
                    sgd_fused::update_param(h, p.as_tensor(), &grad, &buffer)?;
                    continue;
                }
                let mut d_p = grad.detach();
                if maximize {
                    d_p = d_p.neg()?;
                }
                if weight_decay != 0.0 {
                    d_p = (d_p + p.as_tensor().detach().affine(weight_decay, 0.0)?)?;
                }
                if momentum != 0.0 {
                    let buf = match &self.buffers[i] {
                        None => d_p.copy()?,
                        Some(b) => {
                            (b.affine(momentum, 0.0)? + d_p.affine(1.0 - dampening, 0.0)?)?
                        }
                    };
                    d_p = if nesterov {
                        (d_p + buf.affine(momentum, 0.0)?)?
                    } else {
                        buf.clone()
                    };
                    self.buffers[i] = Some(buf);
                }
                let new = (p.as_tensor().detach() + d_p.affine(-lr, 0.0)?)?;
                p.set(&new)?;
            }
        }
        Ok(())
    }

    fn state_dict(&self) -> Value {
        let params = self.groups.iter().flat_map(|g| &g.params);
        let state = self
            .buffers
            .iter()
            .zip(params)
            .enumerate()
            .filter_map(|(i, (b, _))| {
                let mut d = Dict::new(DictKind::Plain);
                // A copy: the step updates the buffer in place.
                d.insert("momentum_buffer", b.as_ref()?.copy().ok()?);
                Some((i, d))
            })
            .collect();
        state_dict::build(&self.groups, state)
    }

    fn load_state_dict(&mut self, value: &Value) -> Result<()> {
        let loaded = state_dict::parse(&self.groups, value)?;
        let params: Vec<_> = self.groups.iter().flat_map(|g| g.params.clone()).collect();
        let mut buffers = vec![None; params.len()];
        for (i, (s, p)) in loaded.state.iter().zip(&params).enumerate() {
            if let Some(s) = s {
                // A copy the step may update in place without touching the caller's dict.
                buffers[i] = state_dict::tensor_for(s, "momentum_buffer", p)?
                    .map(|t| t.copy())
                    .transpose()?;
            }
        }
        for (g, opts) in self.groups.iter_mut().zip(loaded.group_options) {
            g.options = opts;
        }
        self.buffers = buffers;
        Ok(())
    }
}
