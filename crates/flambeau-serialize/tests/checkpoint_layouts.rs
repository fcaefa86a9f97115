//! `Checkpoint::load` finds the optimizer and scheduler under every key people save them under
//! (`scheduler`, `scheduler_state_dict`, `lr_scheduler`, `lr_scheduler_state_dict`, Lightning's
//! lists), in files written by real PyTorch, and the resumed StepLR gives PyTorch's learning
//! rates step for step.

use candle_core::Var;
use flambeau_optim::lr_scheduler::{LrScheduler, Scheduler, StepLr};
use flambeau_optim::{Optimizer, ParamGroup, Sgd, SgdConfig};
use flambeau_serialize::{Checkpoint, LoadConfig, Value};
use flambeau_testkit::{fixture, load_json};

const LAYOUTS: [&str; 5] = [
    "mixed_lr_scheduler",
    "mixed_scheduler",
    "mixed_lr_scheduler_state_dict",
    "model_with_scheduler_state_dict",
    "lightning_lists",
];

#[test]
fn every_scheduler_and_optimizer_key_is_found_and_resumes_pytorchs_schedule() {
    let expected = load_json(&fixture(
        "flambeau-serialize",
        "checkpoint_layouts/expected.json",
    ));
    let next: Vec<f64> = expected["next_lrs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    for name in LAYOUTS {
        let path = fixture(
            "flambeau-serialize",
            &format!("checkpoint_layouts/{name}.pth"),
        );
        let ckpt = Checkpoint::load(&path, &LoadConfig::default()).unwrap();
        assert_eq!(ckpt.epoch, 1, "{name}");
        assert_eq!(ckpt.model.len(), 4, "{name}");
        let sched = ckpt
            .scheduler
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: no scheduler found"));
        assert_eq!(
            sched.get("last_epoch").and_then(Value::as_i64),
            expected["last_epoch"].as_i64(),
            "{name}"
        );
        let opt_state = ckpt
            .optimizer
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: no optimizer found"));
        assert_eq!(
            opt_state.get("state").unwrap().as_dict().unwrap().len() as u64,
            expected["momentum_keys"].as_u64().unwrap(),
            "{name}"
        );
        // None of the states is left behind as an extra (they would be written twice).
        for k in [
            "lr_scheduler",
            "lr_scheduler_state_dict",
            "lr_schedulers",
            "optimizer",
            "optimizer_states",
        ] {
            assert!(ckpt.extra.get(k).is_none(), "{name}: `{k}` left in extras");
        }

        // Resume as a training loop does: build, then load the states.
        let params: Vec<Var> = ckpt
            .model
            .iter()
            .map(|(_, t)| Var::from_tensor(t).unwrap())
            .collect();
        let mut opt = Sgd::new(
            vec![ParamGroup::new(params)],
            SgdConfig {
                lr: 0.5,
                momentum: 0.9,
                ..Default::default()
            },
        )
        .unwrap();
        let mut sch = Scheduler::new(
            StepLr {
                step_size: 1,
                gamma: 0.5,
            },
            &mut opt as &mut dyn Optimizer,
        )
        .unwrap();
        opt.load_state_dict(opt_state).unwrap();
        sch.load_state_dict(sched).unwrap();
        assert_eq!(opt.lr(0), expected["lr"].as_f64().unwrap(), "{name}");
        let lrs: Vec<f64> = (0..next.len())
            .map(|_| {
                sch.step(&mut opt).unwrap();
                sch.last_lr()[0]
            })
            .collect();
        assert_eq!(lrs, next, "{name}");
    }
}

#[test]
fn a_name_under_a_scheduler_key_stays_an_extra() {
    let path = fixture(
        "flambeau-serialize",
        "checkpoint_layouts/lightning_lists.pth",
    );
    let ckpt = Checkpoint::load(&path, &LoadConfig::default()).unwrap();
    assert_eq!(
        ckpt.extra.get("scheduler").and_then(Value::as_str),
        Some("step")
    );
    assert_eq!(ckpt.global_step, 6);
}
