//! LR schedulers against PyTorch: 30-step learning-rate (and momentum) sequences to 1e-12 and
//! the final state_dict, for every scheduler kind and for a chained SequentialLR.

mod common;

use candle_core::{DType, Device};
use common::pyjson::{assert_matches, parse_float, to_value};
use flambeau_core::{Init, Value, VarStore};
use flambeau_optim::lr_scheduler::{
    AnnealStrategy, CosineAnnealingLr, ExponentialLr, LinearLr, LrScheduler, MultiStepLr,
    OneCycleLr, Scheduler, SequentialLr, StepLr,
};
use flambeau_optim::{Adam, AdamConfig, Optimizer, ParamGroup, Sgd, SgdConfig};
use flambeau_testkit::{fixture, load_json};

fn optimizer(adam: bool) -> Box<dyn Optimizer> {
    let vs = VarStore::new(&Device::Cpu, DType::F32);
    let a = vs.root().param_var("a", 1, Init::Const(0.0)).unwrap();
    let b = vs.root().param_var("b", 1, Init::Const(0.0)).unwrap();
    let groups = vec![
        ParamGroup::new(vec![a]),
        ParamGroup::new(vec![b]).with("lr", 0.05),
    ];
    if adam {
        Box::new(
            Adam::new(
                groups,
                AdamConfig {
                    lr: 0.1,
                    ..Default::default()
                },
            )
            .unwrap(),
        )
    } else {
        Box::new(
            Sgd::new(
                groups,
                SgdConfig {
                    lr: 0.1,
                    momentum: 0.9,
                    ..Default::default()
                },
            )
            .unwrap(),
        )
    }
}

fn scheduler(name: &str, opt: &mut dyn Optimizer) -> Box<dyn LrScheduler> {
    match name {
        "step" => Box::new(
            Scheduler::new(
                StepLr {
                    step_size: 7,
                    gamma: 0.5,
                },
                opt,
            )
            .unwrap(),
        ),
        "multistep" => {
            Box::new(Scheduler::new(MultiStepLr::new(&[3, 8, 8, 20], 0.3), opt).unwrap())
        }
        "exponential" => Box::new(Scheduler::new(ExponentialLr { gamma: 0.9 }, opt).unwrap()),
        "cosine" => Box::new(
            Scheduler::new(
                CosineAnnealingLr {
                    t_max: 12,
                    eta_min: 0.001,
                },
                opt,
            )
            .unwrap(),
        ),
        "linear" => Box::new(Scheduler::new(LinearLr::new(0.25, 1.0, 6).unwrap(), opt).unwrap()),
        "onecycle" | "onecycle_adam" => {
            Box::new(Scheduler::new(OneCycleLr::new(vec![0.4, 0.2], 31), opt).unwrap())
        }
        "onecycle_linear_three_phase" => {
            let mut s = OneCycleLr::new(vec![0.3], 31);
            s.anneal_strategy = AnnealStrategy::Linear;
            s.three_phase = true;
            Box::new(Scheduler::new(s, opt).unwrap())
        }
        "sequential" => {
            let warm = Scheduler::new(LinearLr::new(0.1, 1.0, 5).unwrap(), opt).unwrap();
            let cos = Scheduler::new(
                CosineAnnealingLr {
                    t_max: 25,
                    eta_min: 0.0,
                },
                opt,
            )
            .unwrap();
            Box::new(SequentialLr::new(opt, vec![Box::new(warm), Box::new(cos)], vec![5]).unwrap())
        }
        other => panic!("no scheduler {other}"),
    }
}

fn floats(j: &serde_json::Value) -> Vec<f64> {
    j.as_array()
        .unwrap()
        .iter()
        .map(|v| parse_float(v.as_str().unwrap()))
        .collect()
}

fn assert_exact(what: &str, ours: &[f64], theirs: &[f64]) {
    assert_eq!(ours.len(), theirs.len(), "{what}");
    for (a, b) in ours.iter().zip(theirs) {
        assert!(
            (a - b).abs() <= 1e-12 * b.abs().max(1e-300) || a == b,
            "{what}: {ours:?} vs PyTorch {theirs:?}"
        );
    }
}

#[test]
fn thirty_steps_match_pytorch_exactly() {
    let cases = load_json(&fixture("flambeau-optim", "optim/schedulers.json"));
    let none = Default::default();
    for (name, case) in cases.as_object().unwrap() {
        let mut opt = optimizer(name.ends_with("adam"));
        let mut sch = scheduler(name, opt.as_mut());
        let lrs = case["lrs"].as_array().unwrap();
        assert_exact(&format!("{name} initial"), &sch.last_lr(), &floats(&lrs[0]));
        for (step, expected) in lrs.iter().enumerate().skip(1) {
            sch.step(opt.as_mut()).unwrap();
            assert_exact(
                &format!("{name} step {step}"),
                &sch.last_lr(),
                &floats(expected),
            );
            let moms: Vec<f64> = opt
                .param_groups()
                .iter()
                .map(|g| match g.options.get("betas") {
                    Some(Value::Tuple(b)) => b[0].as_f64().unwrap(),
                    _ => g.get_f64("momentum").unwrap(),
                })
                .collect();
            assert_exact(
                &format!("{name} momentum {step}"),
                &moms,
                &floats(&case["momentums"][step - 1]),
            );
        }
        assert_matches(
            &sch.state_dict(),
            &to_value(&case["state_dict"], &none),
            name,
            1e-12,
        );
        let groups = Value::List(
            opt.param_groups()
                .iter()
                .map(|g| Value::Dict(g.options.clone()))
                .collect(),
        );
        assert_matches(
            &groups,
            &to_value(&case["groups"], &none),
            &format!("{name} groups"),
            1e-12,
        );
    }
}

#[test]
fn state_dict_round_trip_resumes_the_schedule() {
    for name in ["step", "multistep", "cosine", "onecycle", "sequential"] {
        let mut straight_opt = optimizer(false);
        let mut straight = scheduler(name, straight_opt.as_mut());
        let mut opt = optimizer(false);
        let mut sch = scheduler(name, opt.as_mut());
        for _ in 0..9 {
            straight.step(straight_opt.as_mut()).unwrap();
            sch.step(opt.as_mut()).unwrap();
        }
        let saved_sched = sch.state_dict();
        let saved_opt = opt.state_dict();
        let mut opt2 = optimizer(false);
        let mut sch2 = scheduler(name, opt2.as_mut());
        opt2.load_state_dict(&saved_opt).unwrap();
        sch2.load_state_dict(&saved_sched).unwrap();
        for step in 0..12 {
            straight.step(straight_opt.as_mut()).unwrap();
            sch2.step(opt2.as_mut()).unwrap();
            assert_eq!(
                sch2.last_lr(),
                straight.last_lr(),
                "{name} resumed step {step}"
            );
        }
    }
}

#[test]
fn invalid_configurations_are_errors() {
    assert!(LinearLr::new(0.0, 1.0, 5).is_err());
    assert!(LinearLr::new(0.5, 1.5, 5).is_err());
    let mut opt = optimizer(false);
    let err = SequentialLr::new(opt.as_mut(), vec![], vec![]).unwrap_err();
    assert!(err.to_string().contains("at least one scheduler"));
    let mut opt = optimizer(false);
    let mut one = Scheduler::new(OneCycleLr::new(vec![0.1], 3), opt.as_mut()).unwrap();
    for _ in 0..3 {
        one.step(opt.as_mut()).unwrap();
    }
    let err = one.step(opt.as_mut()).unwrap_err();
    assert!(err.to_string().contains("Tried to step 4 times"), "{err}");
    assert!(
        matches!(
            err,
            flambeau_core::Error::StepsExhausted {
                step: 4,
                total_steps: 3
            }
        ),
        "{err:?}"
    );
    let err = LinearLr::new(0.0, 1.0, 5).unwrap_err();
    assert!(
        matches!(&err, flambeau_core::Error::InvalidArgument { name, .. } if name == "start_factor"),
        "{err:?}"
    );
    let err = one
        .load_state_dict(&flambeau_core::Value::Int(1))
        .unwrap_err();
    assert!(
        matches!(
            err,
            flambeau_core::Error::InvalidState {
                what: "scheduler",
                ..
            }
        ),
        "{err:?}"
    );
}
