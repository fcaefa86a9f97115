//! Hyper-parameter validation: every constructor refuses what PyTorch's refuses, with PyTorch's
//! wording, and also NaN and infinity (which PyTorch's `lr < 0.0` lets through).

use candle_core::{DType, Device, Var};
use flambeau_core::Value;
use flambeau_optim::lr_scheduler::{
    CosineAnnealingLr, ExponentialLr, LinearLr, MultiStepLr, OneCycleLr, Scheduler, StepLr,
};
use flambeau_optim::{
    clip_grad_norm, clip_grad_value, Adam, AdamConfig, Optimizer, ParamGroup, Sgd, SgdConfig,
};

fn param() -> Var {
    Var::zeros(3, DType::F32, &Device::Cpu).unwrap()
}

fn group() -> Vec<ParamGroup> {
    vec![ParamGroup::new(vec![param()])]
}

fn sgd_err(config: SgdConfig) -> String {
    Sgd::new(group(), config).unwrap_err().to_string()
}

fn adam_err(config: AdamConfig) -> String {
    Adam::new(group(), config).unwrap_err().to_string()
}

#[track_caller]
fn starts(msg: &str, prefix: &str) {
    assert!(msg.starts_with(prefix), "expected `{prefix}…`, got `{msg}`");
}

#[test]
fn sgd_refuses_bad_hyper_parameters_with_pytorch_wording() {
    let base = SgdConfig {
        lr: 0.1,
        momentum: 0.9,
        ..Default::default()
    };
    for lr in [f64::NAN, f64::INFINITY, -0.1] {
        let msg = sgd_err(SgdConfig { lr, ..base });
        starts(&msg, "Invalid learning rate: ");
    }
    starts(
        &sgd_err(SgdConfig {
            lr: f64::NAN,
            ..base
        }),
        "Invalid learning rate: nan",
    );
    starts(
        &sgd_err(SgdConfig {
            lr: f64::INFINITY,
            ..base
        }),
        "Invalid learning rate: inf",
    );
    starts(
        &sgd_err(SgdConfig {
            momentum: -1.0,
            ..base
        }),
        "Invalid momentum value: -1.0",
    );
    starts(
        &sgd_err(SgdConfig {
            momentum: f64::NAN,
            ..base
        }),
        "Invalid momentum value: nan",
    );
    starts(
        &sgd_err(SgdConfig {
            weight_decay: f64::NAN,
            ..base
        }),
        "Invalid weight_decay value: nan",
    );
    starts(
        &sgd_err(SgdConfig {
            weight_decay: -1e-5,
            ..base
        }),
        "Invalid weight_decay value: -1e-05",
    );
    starts(
        &sgd_err(SgdConfig {
            dampening: f64::NAN,
            ..base
        }),
        "Invalid dampening value: nan",
    );
    for (momentum, dampening) in [(0.0, 0.0), (0.9, 0.1)] {
        starts(
            &sgd_err(SgdConfig {
                momentum,
                dampening,
                nesterov: true,
                ..base
            }),
            "Nesterov momentum requires a momentum and zero dampening",
        );
    }
    // Good values still build.
    Sgd::new(
        group(),
        SgdConfig {
            nesterov: true,
            weight_decay: 5e-4,
            ..base
        },
    )
    .unwrap();
}

#[test]
fn sgd_checks_per_group_options_too() {
    let groups = vec![
        ParamGroup::new(vec![param()]),
        ParamGroup::new(vec![param()]).with("lr", f64::NAN),
    ];
    let err = Sgd::new(groups, SgdConfig::default()).unwrap_err();
    starts(&err.to_string(), "Invalid learning rate: nan");
    let groups = vec![ParamGroup::new(vec![param()]).with("weight_decay", f64::INFINITY)];
    let err = Sgd::new(groups, SgdConfig::default()).unwrap_err();
    starts(&err.to_string(), "Invalid weight_decay value: inf");
}

#[test]
fn adam_and_adamw_refuse_bad_hyper_parameters_with_pytorch_wording() {
    for base in [AdamConfig::default(), AdamConfig::adamw()] {
        starts(
            &adam_err(AdamConfig {
                lr: f64::NAN,
                ..base
            }),
            "Invalid learning rate: nan",
        );
        starts(
            &adam_err(AdamConfig {
                lr: f64::INFINITY,
                ..base
            }),
            "Invalid learning rate: inf",
        );
        starts(
            &adam_err(AdamConfig { eps: -1.0, ..base }),
            "Invalid epsilon value: -1.0",
        );
        starts(
            &adam_err(AdamConfig {
                eps: f64::NAN,
                ..base
            }),
            "Invalid epsilon value: nan",
        );
        starts(
            &adam_err(AdamConfig {
                betas: (1.0, 0.999),
                ..base
            }),
            "Invalid beta parameter at index 0: 1.0",
        );
        starts(
            &adam_err(AdamConfig {
                betas: (0.9, f64::NAN),
                ..base
            }),
            "Invalid beta parameter at index 1: nan",
        );
        starts(
            &adam_err(AdamConfig {
                weight_decay: f64::NAN,
                ..base
            }),
            "Invalid weight_decay value: nan",
        );
    }
    let err = Adam::adamw(
        vec![ParamGroup::new(vec![param()]).with(
            "betas",
            Value::Tuple(vec![Value::Float(-0.1), Value::Float(0.999)]),
        )],
        AdamConfig::adamw(),
    )
    .unwrap_err();
    starts(&err.to_string(), "Invalid beta parameter at index 0: -0.1");
}

fn sgd() -> Sgd {
    Sgd::new(
        group(),
        SgdConfig {
            lr: 0.1,
            ..Default::default()
        },
    )
    .unwrap()
}

#[track_caller]
fn scheduler_err<S: flambeau_optim::lr_scheduler::Schedule>(schedule: S, prefix: &str) {
    let mut opt = sgd();
    let err = Scheduler::new(schedule, &mut opt as &mut dyn Optimizer)
        .err()
        .expect("the scheduler should be refused");
    starts(&err.to_string(), prefix);
    // Refused before touching the optimizer.
    assert_eq!(opt.lr(0), 0.1);
}

#[test]
fn schedulers_refuse_nan_gamma_and_zero_periods() {
    scheduler_err(
        StepLr {
            step_size: 1,
            gamma: f64::NAN,
        },
        "Invalid gamma value: nan",
    );
    scheduler_err(
        StepLr {
            step_size: 0,
            gamma: 0.1,
        },
        "Expected positive integer step_size, but got 0",
    );
    scheduler_err(
        ExponentialLr {
            gamma: f64::INFINITY,
        },
        "Invalid gamma value: inf",
    );
    scheduler_err(MultiStepLr::new(&[2, 4], -0.5), "Invalid gamma value: -0.5");
    scheduler_err(
        CosineAnnealingLr {
            t_max: 0,
            eta_min: 0.0,
        },
        "Expected positive integer T_max, but got 0",
    );
    scheduler_err(
        CosineAnnealingLr {
            t_max: 10,
            eta_min: f64::NAN,
        },
        "Invalid eta_min value: nan",
    );
    scheduler_err(
        LinearLr {
            start_factor: f64::NAN,
            end_factor: 1.0,
            total_iters: 5,
        },
        "Starting multiplicative factor expected to be greater than 0 and less or equal to 1",
    );
    assert!(LinearLr::new(f64::NAN, 1.0, 5).is_err());
    assert!(LinearLr::new(0.5, f64::NAN, 5).is_err());
    scheduler_err(
        OneCycleLr::new(vec![f64::NAN], 10),
        "Invalid max_lr value: nan",
    );
    scheduler_err(
        OneCycleLr::new(vec![0.1], 0),
        "Expected positive integer total_steps, but got 0",
    );
    let mut bad = OneCycleLr::new(vec![0.1], 10);
    bad.pct_start = f64::NAN;
    scheduler_err(bad, "Expected float between 0 and 1 pct_start, but got nan");
    let mut bad = OneCycleLr::new(vec![0.1], 10);
    bad.div_factor = 0.0;
    scheduler_err(bad, "Invalid div_factor value: 0.0");
}

#[test]
fn clipping_refuses_nan_thresholds() {
    let p = param();
    let loss = p.as_tensor().sum_all().unwrap();
    let mut grads = loss.backward().unwrap();
    let err = clip_grad_norm(&mut grads, std::slice::from_ref(&p), f64::NAN, 2.0).unwrap_err();
    starts(&err.to_string(), "Invalid max_norm value: nan");
    let err = clip_grad_value(&mut grads, std::slice::from_ref(&p), f64::NAN).unwrap_err();
    starts(&err.to_string(), "Invalid clip_value: nan");
    // The gradient is left as it was.
    let g: Vec<f32> = grads.get(p.as_tensor()).unwrap().to_vec1().unwrap();
    assert_eq!(g, vec![1.0; 3]);
}

#[test]
fn refusals_are_typed_and_name_the_argument() {
    use flambeau_core::Error;
    let err = Sgd::new(
        group(),
        SgdConfig {
            lr: -1.0,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Invalid learning rate: -1.0; expected a finite number >= 0"
    );
    assert!(
        matches!(&err, Error::InvalidArgument { name, .. } if name == "lr"),
        "{err:?}"
    );
    let err = Adam::new(
        group(),
        AdamConfig {
            betas: (1.5, 0.999),
            ..AdamConfig::default()
        },
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument { name, .. } if name == "betas"),
        "{err:?}"
    );
    let mut opt = Sgd::new(group(), SgdConfig::default()).unwrap();
    let err = opt.load_state_dict(&Value::Int(1)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidState {
                what: "optimizer",
                ..
            }
        ),
        "{err:?}"
    );
}
