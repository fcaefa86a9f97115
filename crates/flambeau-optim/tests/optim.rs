//! Optimizers against PyTorch: 10-step trajectories from fixed gradients, state_dict layout,
//! load_state_dict validation, gradient clipping.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::optim_fixture::{grads_of, params, step_grads};
use common::pyjson::{assert_matches, to_value};
use flambeau_core::{Value, VarStore};
use flambeau_optim::{
    clip_grad_norm, clip_grad_value, Adam, AdamConfig, Optimizer, ParamGroup, Sgd, SgdConfig,
};
use flambeau_testkit::{assert_close, fixture, load_json, load_tensors};

fn f(kw: &serde_json::Value, k: &str, default: f64) -> f64 {
    kw.get(k).and_then(|v| v.as_f64()).unwrap_or(default)
}
fn b(kw: &serde_json::Value, k: &str) -> bool {
    kw.get(k).and_then(|v| v.as_bool()).unwrap_or(false)
}

/// The optimizer of a fixture case: two groups, the last at half the learning rate.
fn build(name: &str, kw: &serde_json::Value, ps: &[Var]) -> Box<dyn Optimizer> {
    let lr = f(kw, "lr", 1e-3);
    let groups = vec![
        ParamGroup::new(ps[..2].to_vec()),
        ParamGroup::new(ps[2..].to_vec()).with("lr", lr / 2.0),
    ];
    if name.starts_with("sgd") {
        let cfg = SgdConfig {
            lr,
            momentum: f(kw, "momentum", 0.0),
            dampening: f(kw, "dampening", 0.0),
            weight_decay: f(kw, "weight_decay", 0.0),
            nesterov: b(kw, "nesterov"),
            maximize: b(kw, "maximize"),
        };
        return Box::new(Sgd::new(groups, cfg).unwrap());
    }
    let base = if name.starts_with("adamw") {
        AdamConfig::adamw()
    } else {
        AdamConfig::default()
    };
    let betas = kw
        .get("betas")
        .map(|v| (v[0].as_f64().unwrap(), v[1].as_f64().unwrap()));
    let cfg = AdamConfig {
        lr,
        betas: betas.unwrap_or(base.betas),
        eps: f(kw, "eps", base.eps),
        weight_decay: f(kw, "weight_decay", base.weight_decay),
        amsgrad: b(kw, "amsgrad"),
        maximize: b(kw, "maximize"),
        ..base
    };
    Box::new(Adam::new(groups, cfg).unwrap())
}

#[test]
fn ten_step_trajectories_and_state_dicts_match_pytorch() {
    let cases = load_json(&fixture("flambeau-optim", "optim/optimizers.json"));
    let grads = load_tensors(&fixture("flambeau-optim", "optim/grads.safetensors"));
    for (name, case) in cases.as_object().unwrap() {
        let t = load_tensors(&fixture(
            "flambeau-optim",
            &format!("optim/{name}.safetensors"),
        ));
        let (_vs, ps) = params(&t);
        let mut opt = build(name, &case["kwargs"], &ps);
        for step in 0..10 {
            opt.step(&grads_of(&ps, &step_grads(&grads, step))).unwrap();
            for (i, p) in ps.iter().enumerate() {
                assert_close(
                    &format!("{name} step {step} param {i}"),
                    p.as_tensor(),
                    &t[&format!("step{step}.{i}")],
                    1e-6,
                    1e-7,
                );
            }
        }
        let expected = to_value(&case["state_dict"], &t);
        assert_matches(&opt.state_dict(), &expected, name, 1e-6);
    }
}

#[test]
fn loading_pytorchs_state_reproduces_it() {
    let cases = load_json(&fixture("flambeau-optim", "optim/optimizers.json"));
    for name in ["sgd_momentum", "adam_amsgrad_wd"] {
        let case = &cases[name];
        let t = load_tensors(&fixture(
            "flambeau-optim",
            &format!("optim/{name}.safetensors"),
        ));
        let (_vs, ps) = params(&t);
        let mut opt = build(name, &case["kwargs"], &ps);
        let theirs = to_value(&case["state_dict"], &t);
        opt.load_state_dict(&theirs).unwrap();
        assert_matches(&opt.state_dict(), &theirs, name, 0.0);
    }
}

#[test]
fn load_state_dict_checks_groups_like_pytorch() {
    let cases = load_json(&fixture("flambeau-optim", "optim/optimizers.json"));
    let t = load_tensors(&fixture("flambeau-optim", "optim/sgd_momentum.safetensors"));
    let (_vs, ps) = params(&t);
    let theirs = to_value(&cases["sgd_momentum"]["state_dict"], &t);
    let mut one_group = Sgd::new(vec![ParamGroup::new(ps.clone())], SgdConfig::default()).unwrap();
    let err = one_group.load_state_dict(&theirs).unwrap_err().to_string();
    assert_eq!(
        err,
        "loaded state dict has a different number of parameter groups"
    );
    let mut sizes = Sgd::new(
        vec![
            ParamGroup::new(ps[..1].to_vec()),
            ParamGroup::new(ps[1..].to_vec()),
        ],
        SgdConfig::default(),
    )
    .unwrap();
    let err = sizes.load_state_dict(&theirs).unwrap_err().to_string();
    assert_eq!(err, "loaded state dict contains a parameter group that doesn't match the size of optimizer's group");
    assert!(one_group.load_state_dict(&Value::Int(3)).is_err());
}

#[test]
fn unknown_group_keys_survive_a_round_trip() {
    let t = load_tensors(&fixture("flambeau-optim", "optim/sgd.safetensors"));
    let (_vs, ps) = params(&t);
    let mut opt = Sgd::new(vec![ParamGroup::new(ps)], SgdConfig::default()).unwrap();
    let mut sd = opt.state_dict();
    let group = match sd.as_dict_mut().unwrap().entries[1].1 {
        Value::List(ref mut g) => g[0].as_dict_mut().unwrap(),
        _ => unreachable!(),
    };
    group.insert("initial_lr", 0.5);
    group.insert("my_tag", "backbone");
    opt.load_state_dict(&sd).unwrap();
    assert_eq!(
        opt.param_groups()[0]
            .options
            .get("my_tag")
            .unwrap()
            .as_str(),
        Some("backbone")
    );
    assert_eq!(opt.param_groups()[0].get_f64("initial_lr").unwrap(), 0.5);
}

#[test]
fn gradient_clipping_matches_pytorch() {
    let grads = load_tensors(&fixture("flambeau-optim", "optim/grads.safetensors"));
    let clip = load_tensors(&fixture("flambeau-optim", "optim/clip.safetensors"));
    let t = load_tensors(&fixture("flambeau-optim", "optim/sgd.safetensors"));
    let (_vs, ps) = params(&t);
    let tripled: Vec<Tensor> = step_grads(&grads, 0)
        .iter()
        .map(|g| (g * 3.0).unwrap())
        .collect();
    for (kind, max, norm) in [("norm2", 1.0, 2.0), ("norminf", 0.5, f64::INFINITY)] {
        let mut gs = grads_of(&ps, &tripled);
        let total = clip_grad_norm(&mut gs, &ps, max, norm).unwrap();
        let expected = clip[&format!("total_{kind}")].to_scalar::<f32>().unwrap() as f64;
        assert!(
            (total - expected).abs() <= 1e-5 * expected,
            "{kind}: {total} vs {expected}"
        );
        for (i, p) in ps.iter().enumerate() {
            assert_close(
                kind,
                gs.get(p.as_tensor()).unwrap(),
                &clip[&format!("{kind}.{i}")],
                1e-5,
                1e-7,
            );
        }
    }
    let mut gs = grads_of(&ps, &tripled);
    clip_grad_value(&mut gs, &ps, 0.7).unwrap();
    for (i, p) in ps.iter().enumerate() {
        assert_close(
            "value",
            gs.get(p.as_tensor()).unwrap(),
            &clip[&format!("value.{i}")],
            0.0,
            0.0,
        );
    }
}

#[test]
fn parameters_without_gradients_are_skipped() {
    let t = load_tensors(&fixture("flambeau-optim", "optim/sgd.safetensors"));
    let (_vs, ps) = params(&t);
    let before = ps[2].as_tensor().copy().unwrap();
    let mut opt = Adam::new(vec![ParamGroup::new(ps.clone())], AdamConfig::default()).unwrap();
    let loss = ps[0].as_tensor().sum_all().unwrap();
    opt.step(&loss.backward().unwrap()).unwrap();
    assert_close("untouched", ps[2].as_tensor(), &before, 0.0, 0.0);
    let sd = opt.state_dict();
    assert_eq!(sd.get("state").unwrap().as_dict().unwrap().len(), 1);
}

#[test]
fn split_by_name_makes_backbone_and_head_groups() {
    let vs = VarStore::new(&Device::Cpu, DType::F32);
    flambeau_nn::Linear::new(vs.root().pp("body"), 2, 2, true).unwrap();
    flambeau_nn::Linear::new(vs.root().pp("fc"), 2, 2, true).unwrap();
    let groups = flambeau_optim::split_by_name(&vs, &[r"^fc\."]).unwrap();
    let groups = vec![
        groups[0].clone().with("lr", 1e-3),
        groups[1].clone().with("lr", 1e-4),
    ];
    let opt = Sgd::new(groups, SgdConfig::default()).unwrap();
    assert_eq!(opt.param_groups()[0].params.len(), 2);
    assert_eq!(opt.lr(0), 1e-3);
    assert_eq!(opt.lr(1), 1e-4);
}

/// The fused SGD step updates its momentum buffers in place; the state dicts it hands out and
/// takes in must not change with later steps (checkpoints are snapshots).
#[test]
fn sgd_state_dicts_are_snapshots() {
    let grads = load_tensors(&fixture("flambeau-optim", "optim/grads.safetensors"));
    let t = load_tensors(&fixture("flambeau-optim", "optim/sgd_momentum.safetensors"));
    let (_vs, ps) = params(&t);
    let config = SgdConfig {
        lr: 0.1,
        momentum: 0.9,
        ..Default::default()
    };
    let mut opt = Sgd::new(vec![ParamGroup::new(ps.clone())], config).unwrap();
    opt.step(&grads_of(&ps, &step_grads(&grads, 0))).unwrap();
    let buffer = |sd: &Value| -> Vec<f32> {
        let state = sd.get("state").unwrap().as_dict().unwrap();
        let b = state.get_value(&Value::Int(0)).unwrap();
        let t = b.get("momentum_buffer").unwrap().as_tensor().unwrap();
        t.flatten_all().unwrap().to_vec1().unwrap()
    };
    let saved = opt.state_dict();
    let before = buffer(&saved);
    opt.step(&grads_of(&ps, &step_grads(&grads, 1))).unwrap();
    assert_eq!(
        buffer(&saved),
        before,
        "a later step changed a saved state dict"
    );
    assert_ne!(buffer(&opt.state_dict()), before, "the buffer did not move");

    let mut resumed = Sgd::new(vec![ParamGroup::new(ps.clone())], config).unwrap();
    resumed.load_state_dict(&saved).unwrap();
    resumed
        .step(&grads_of(&ps, &step_grads(&grads, 2)))
        .unwrap();
    assert_eq!(
        buffer(&saved),
        before,
        "a step changed the state dict it was loaded from"
    );
}
