//! Shared helpers for flambeau-nn's integration tests.
#![allow(dead_code)]

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use flambeau_core::{LoadOptions, StateDict, VarStore};
use flambeau_testkit::{fixture, load_tensors};

/// The tensors of `tests/fixtures/nn/<name>.safetensors`.
pub fn nn_fixture(name: &str) -> HashMap<String, Tensor> {
    load_tensors(&fixture("flambeau-nn", &format!("nn/{name}.safetensors")))
}

/// Loads the fixture's `param.<key>` tensors into the store (strictly).
pub fn load_params(vs: &VarStore, t: &HashMap<String, Tensor>) {
    let mut sd = StateDict::new();
    for (k, v) in t {
        if let Some(name) = k.strip_prefix("param.") {
            sd.insert(name, v.clone());
        }
    }
    vs.load_state_dict(&sd, &LoadOptions::default())
        .expect("fixture parameters load");
}

/// An f64 store on the CPU.
pub fn store() -> VarStore {
    VarStore::new(&Device::Cpu, DType::F64)
}

/// Runs `f` on the fixture's `x` as a variable, backpropagates `sum(out * g)`, and returns
/// `(out, grad_x, grads)`.
pub fn forward_backward(
    t: &HashMap<String, Tensor>,
    f: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
) -> (Tensor, Tensor, candle_core::backprop::GradStore) {
    let x = Var::from_tensor(&t["x"]).unwrap();
    let out = f(x.as_tensor()).unwrap();
    let loss = (&out * &t["g"]).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let gx = grads.get(x.as_tensor()).expect("gradient of x").clone();
    (out, gx, grads)
}
