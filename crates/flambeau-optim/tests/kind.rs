//! Recognising the optimizer and scheduler that wrote a state dict.

use candle_core::{DType, Device};
use flambeau_core::{Dict, DictKind, Init, Value, VarStore};
use flambeau_optim::lr_scheduler::{
    CosineAnnealingLr, ExponentialLr, LrScheduler, MultiStepLr, OneCycleLr, Scheduler, StepLr,
};
use flambeau_optim::{
    Adam, AdamConfig, Optimizer, OptimizerKind, ParamGroup, SchedulerKind, Sgd, SgdConfig,
};

fn groups() -> Vec<ParamGroup> {
    let vs = VarStore::new(&Device::Cpu, DType::F32);
    let a = vs.root().param_var("a", 1, Init::Const(0.0)).unwrap();
    vec![ParamGroup::new(vec![a])]
}

fn sgd() -> Sgd {
    Sgd::new(
        groups(),
        SgdConfig {
            lr: 0.1,
            momentum: 0.9,
            ..Default::default()
        },
    )
    .unwrap()
}

#[test]
fn optimizers_are_told_apart_by_betas() {
    let adamw = Adam::adamw(groups(), AdamConfig::adamw()).unwrap();
    let adam = Adam::new(groups(), AdamConfig::default()).unwrap();
    assert_eq!(
        OptimizerKind::of_state_dict(&sgd().state_dict()),
        OptimizerKind::Sgd
    );
    assert_eq!(
        OptimizerKind::of_state_dict(&adamw.state_dict()),
        OptimizerKind::Adam
    );
    assert_eq!(
        OptimizerKind::of_state_dict(&adam.state_dict()),
        OptimizerKind::Adam
    );
}

#[test]
fn every_scheduler_kind_is_recognised_and_others_are_not() {
    let mut opt = sgd();
    let states: Vec<(Value, Option<SchedulerKind>)> = vec![
        (
            Scheduler::new(
                StepLr {
                    step_size: 2,
                    gamma: 0.1,
                },
                &mut opt,
            )
            .unwrap()
            .state_dict(),
            Some(SchedulerKind::Step),
        ),
        (
            Scheduler::new(MultiStepLr::new(&[2, 4], 0.1), &mut opt)
                .unwrap()
                .state_dict(),
            Some(SchedulerKind::MultiStep),
        ),
        (
            Scheduler::new(
                CosineAnnealingLr {
                    t_max: 5,
                    eta_min: 0.0,
                },
                &mut opt,
            )
            .unwrap()
            .state_dict(),
            Some(SchedulerKind::Cosine),
        ),
        (
            Scheduler::new(OneCycleLr::new(vec![0.1], 10), &mut opt)
                .unwrap()
                .state_dict(),
            Some(SchedulerKind::OneCycle),
        ),
        (
            Scheduler::new(ExponentialLr { gamma: 0.9 }, &mut opt)
                .unwrap()
                .state_dict(),
            None,
        ),
        (Value::Dict(Dict::new(DictKind::Plain)), None),
    ];
    for (state, expected) in states {
        assert_eq!(SchedulerKind::of_state_dict(&state), expected, "{state:?}");
    }
    assert!(SchedulerKind::OneCycle.steps_per_batch());
    assert!(!SchedulerKind::Cosine.steps_per_batch());
}
