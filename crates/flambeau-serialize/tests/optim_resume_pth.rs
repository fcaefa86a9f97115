//! Resume from a real PyTorch training file: optimizer + scheduler state saved by `torch.save`
//! after 3 steps continue in flambeau to PyTorch's own 6-step result.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use flambeau_core::{Init, VarStore};
use flambeau_optim::lr_scheduler::{LrScheduler, Scheduler, StepLr};
use flambeau_optim::{Optimizer, ParamGroup, Sgd, SgdConfig};
use flambeau_serialize::{load, LoadConfig};
use flambeau_testkit::{assert_close, fixture, load_tensors};

fn grads_of(ps: &[Var], gs: &[Tensor]) -> candle_core::backprop::GradStore {
    let mut loss = Tensor::new(0f32, &Device::Cpu).unwrap();
    for (p, g) in ps.iter().zip(gs) {
        loss = (loss + (p.as_tensor() * g).unwrap().sum_all().unwrap()).unwrap();
    }
    loss.backward().unwrap()
}

#[test]
fn sgd_and_steplr_state_from_a_pth_file_continue_exactly() {
    let t: HashMap<String, Tensor> = load_tensors(&fixture(
        "flambeau-optim",
        "optim/resume_sgd_steplr.safetensors",
    ));
    let grads = load_tensors(&fixture("flambeau-optim", "optim/grads.safetensors"));
    let file = load(
        fixture("flambeau-optim", "optim/resume_sgd_steplr.pth"),
        &LoadConfig::default(),
    )
    .unwrap();
    assert_eq!(file.get("epoch").unwrap().as_i64(), Some(3));

    let vs = VarStore::new(&Device::Cpu, DType::F32);
    let shapes: [&[usize]; 3] = [&[3, 4], &[4], &[2, 2]];
    let ps: Vec<Var> = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let v = vs
                .root()
                .param_var(&format!("p{i}"), *s, Init::Const(0.0))
                .unwrap();
            v.set(&t[&format!("step3.{i}")]).unwrap();
            v
        })
        .collect();
    let cfg = SgdConfig {
        lr: 0.1,
        momentum: 0.9,
        weight_decay: 1e-3,
        ..Default::default()
    };
    let mut opt = Sgd::new(vec![ParamGroup::new(ps.clone())], cfg).unwrap();
    let mut sch = Scheduler::new(
        StepLr {
            step_size: 2,
            gamma: 0.5,
        },
        &mut opt,
    )
    .unwrap();
    opt.load_state_dict(file.get("optimizer").unwrap()).unwrap();
    sch.load_state_dict(file.get("scheduler").unwrap()).unwrap();
    for step in 3..6 {
        let gs: Vec<Tensor> = (0..3)
            .map(|i| grads[&format!("step{step}.{i}")].clone())
            .collect();
        opt.step(&grads_of(&ps, &gs)).unwrap();
        sch.step(&mut opt).unwrap();
    }
    for (i, p) in ps.iter().enumerate() {
        assert_close(
            &format!("param {i}"),
            p.as_tensor(),
            &t[&format!("step6.{i}")],
            1e-6,
            1e-7,
        );
    }
}
