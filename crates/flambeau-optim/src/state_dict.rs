//! The `{'state': {...}, 'param_groups': [...]}` layout shared by every optimizer.

use candle_core::{Tensor, Var};

use crate::ParamGroup;
use flambeau_core::value::{Dict, DictKind, Value};
use flambeau_core::{Error, Result};

/// Builds PyTorch's optimizer state dict. `state` holds `(global index, per-parameter state)`
/// for the parameters that have state; indices number parameters group by group from 0.
pub fn build(groups: &[ParamGroup], state: Vec<(usize, Dict)>) -> Value {
    let mut st = Dict::new(DictKind::Plain);
    for (i, s) in state {
        st.entries.push((Value::Int(i as i64), Value::Dict(s)));
    }
    let mut next = 0usize;
    let groups = groups
        .iter()
        .map(|g| {
            let mut d = g.options.clone();
            let ids = (next..next + g.params.len())
                .map(|i| Value::Int(i as i64))
                .collect();
            next += g.params.len();
            d.insert("params", Value::List(ids));
            Value::Dict(d)
        })
        .collect();
    Value::dict([
        ("state", Value::Dict(st)),
        ("param_groups", Value::List(groups)),
    ])
}

/// A loaded state dict, checked against the optimizer's groups.
pub struct Loaded<'a> {
    /// Each group's options from the file (everything but `params`).
    pub group_options: Vec<Dict>,
    /// Per-parameter state by global index (the optimizer's numbering).
    pub state: Vec<Option<&'a Dict>>,
}

/// Validates `value` like PyTorch's `Optimizer.load_state_dict` and maps the file's parameter
/// ids onto this optimizer's parameters (group by group, position by position).
pub fn parse<'a>(groups: &[ParamGroup], value: &'a Value) -> Result<Loaded<'a>> {
    let bad =
        |what: &str| Error::invalid_state("optimizer", format!("optimizer state_dict: {what}"));
    let saved_groups = value
        .get("param_groups")
        .and_then(Value::as_seq)
        .ok_or_else(|| bad("no `param_groups` list (is this an optimizer state_dict?)"))?;
    let saved_state = value
        .get("state")
        .and_then(Value::as_dict)
        .ok_or_else(|| bad("no `state` dict (is this an optimizer state_dict?)"))?;
    if saved_groups.len() != groups.len() {
        return Err(Error::invalid_state(
            "optimizer",
            "loaded state dict has a different number of parameter groups",
        ));
    }
    let total: usize = groups.iter().map(|g| g.params.len()).sum();
    let mut state = vec![None; total];
    let mut group_options = Vec::with_capacity(groups.len());
    let mut offset = 0;
    for (g, saved) in groups.iter().zip(saved_groups) {
        let saved = saved
            .as_dict()
            .ok_or_else(|| bad("a param group is not a dict"))?;
        let ids = saved
            .get("params")
            .and_then(Value::as_seq)
            .ok_or_else(|| bad("a param group has no `params` list"))?;
        if ids.len() != g.params.len() {
            return Err(Error::invalid_state(
                "optimizer",
                "loaded state dict contains a parameter group that doesn't match the size of optimizer's group",
            ));
        }
        for (pos, id) in ids.iter().enumerate() {
            if let Some(s) = saved_state.get_value(id) {
                let s = s
                    .as_dict()
                    .ok_or_else(|| bad("a parameter's state is not a dict"))?;
                state[offset + pos] = Some(s);
            }
        }
        offset += g.params.len();
        let mut opts = saved.clone();
        opts.remove("params");
        group_options.push(opts);
    }
    Ok(Loaded {
        group_options,
        state,
    })
}

/// A state tensor moved to the parameter's device and, when floating, cast to its dtype
/// (PyTorch's `_process_value_according_to_param_policy`).
pub fn tensor_for(state: &Dict, key: &str, param: &Var) -> Result<Option<Tensor>> {
    let Some(v) = state.get(key) else {
        return Ok(None);
    };
    let t = v.as_tensor().ok_or_else(|| {
        Error::invalid_state(
            "optimizer",
            format!(
                "optimizer state `{key}` is a {}, not a tensor",
                v.type_name()
            ),
        )
    })?;
    if t.dims() != param.dims() {
        return Err(Error::invalid_state(
            "optimizer",
            format!(
                "optimizer state `{key}` has shape {:?} but its parameter has shape {:?}",
                t.dims(),
                param.dims()
            ),
        ));
    }
    // Float state takes the parameter's dtype (cast on the host first where the parameter's
    // device cannot hold the saved dtype); other state keeps its own, on the host if the device
    // cannot hold it (flambeau_core::device_dtypes).
    let t = if t.dtype().is_float() && t.dtype() != param.dtype() {
        flambeau_core::device_dtypes::cast_to(t, param.dtype(), param.device())?
    } else {
        flambeau_core::device_dtypes::load_to(t, param.device())?
    };
    // A private copy: the optimizer updates its state in place of the loaded tensors.
    Ok(Some(t.copy()?))
}

/// The `step` counter of Adam-style state (a 0-dim tensor or a plain number).
pub fn step_count(state: &Dict) -> Result<f64> {
    match state.get("step") {
        Some(Value::Tensor(t)) => Ok(t.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?),
        Some(v) => v.as_f64().ok_or_else(|| {
            Error::invalid_state(
                "optimizer",
                format!("optimizer state `step` is a {}", v.type_name()),
            )
        }),
        None => Err(Error::invalid_state(
            "optimizer",
            "optimizer state has no `step`",
        )),
    }
}
