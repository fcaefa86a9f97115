//! Parameters and gradients of the optim fixtures (see xtask/fixtures/optim.py).
#![allow(dead_code)]

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use flambeau_core::{Init, VarStore};

const SHAPES: [&[usize]; 3] = [&[3, 4], &[4], &[2, 2]];

pub fn params(t: &HashMap<String, Tensor>) -> (VarStore, Vec<Var>) {
    let vs = VarStore::new(&Device::Cpu, DType::F32);
    let ps: Vec<Var> = SHAPES
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let v = vs
                .root()
                .param_var(&format!("p{i}"), *s, Init::Const(0.0))
                .unwrap();
            v.set(&t[&format!("init.{i}")]).unwrap();
            v
        })
        .collect();
    (vs, ps)
}

/// A GradStore holding exactly `gs[i]` for `ps[i]`.
pub fn grads_of(ps: &[Var], gs: &[Tensor]) -> GradStore {
    let mut loss = Tensor::new(0f32, &Device::Cpu).unwrap();
    for (p, g) in ps.iter().zip(gs) {
        loss = (loss + (p.as_tensor() * g).unwrap().sum_all().unwrap()).unwrap();
    }
    loss.backward().unwrap()
}

pub fn step_grads(all: &HashMap<String, Tensor>, step: usize) -> Vec<Tensor> {
    (0..3)
        .map(|i| all[&format!("step{step}.{i}")].clone())
        .collect()
}
