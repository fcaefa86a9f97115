//! Two whole ResNet-18 training steps against torchvision + torch.optim.SGD: the loss of each
//! step, every gradient of the second, every updated parameter and running statistic. The model
//! uses `zero_init_residual` (its zeroed weights must be torchvision's) and a 33×40 input, so the
//! stride-2 layers see odd and even, non-square sizes. CI runs it on both kernel paths.

use candle_core::{DType, Device, ModuleT, Var};
use flambeau_core::{LoadOptions, StateDict, VarStore};
use flambeau_nn::loss::{cross_entropy, CrossEntropyOptions};
use flambeau_optim::{Optimizer, ParamGroup, Sgd, SgdConfig};
use flambeau_testkit::{assert_close, large_fixture, load_tensors, max_abs};
use flambeau_vision::models::{ResNet, ResNetConfig};

#[test]
fn two_sgd_steps_of_a_zero_init_residual_resnet18_match_torchvision() {
    let (Some(init), Some(steps)) = (
        large_fixture("resnet18_zero_init.safetensors"),
        large_fixture("resnet18_two_steps.safetensors"),
    ) else {
        return;
    };
    let t = load_tensors(&steps);
    let vs = VarStore::new(&Device::Cpu, DType::F32);
    let mut cfg = ResNetConfig::resnet18(10);
    cfg.zero_init_residual = true;
    let model = ResNet::new(vs.root(), cfg).unwrap();

    // zero_init_residual zeroes exactly the tensors torchvision zeroes.
    let zeroed = |sd: &StateDict| -> Vec<String> {
        sd.iter()
            .filter(|(_, v)| v.dtype().is_float() && max_abs(v) == 0.0)
            .map(|(k, _)| k.to_string())
            .collect()
    };
    let mut ours = zeroed(&vs.state_dict());
    let mut theirs: Vec<String> = t
        .keys()
        .filter_map(|k| k.strip_prefix("zero.").map(str::to_string))
        .collect();
    ours.sort();
    theirs.sort();
    assert!(!theirs.is_empty());
    assert_eq!(ours, theirs, "tensors zeroed by zero_init_residual");

    let sd: StateDict = load_tensors(&init).into_iter().collect();
    vs.load_state_dict(&sd, &LoadOptions::default()).unwrap();
    let config = SgdConfig {
        lr: 0.05,
        momentum: 0.9,
        nesterov: true,
        weight_decay: 1e-4,
        ..Default::default()
    };
    let mut opt = Sgd::new(vec![ParamGroup::new(vs.parameters())], config).unwrap();
    let loss_options = CrossEntropyOptions {
        label_smoothing: 0.1,
        ..Default::default()
    };
    let mut grads = None;
    for step in 0..2 {
        let x = Var::from_tensor(&t[&format!("x{step}")]).unwrap();
        let logits = model.forward_t(x.as_tensor(), true).unwrap();
        let loss = cross_entropy(&logits, &t[&format!("y{step}")], &loss_options).unwrap();
        assert_close(
            &format!("loss of step {step}"),
            &loss,
            &t[&format!("loss{step}")],
            1e-5,
            1e-5,
        );
        let g = loss.backward().unwrap();
        opt.step(&g).unwrap();
        grads = Some(g);
    }
    let grads = grads.unwrap();
    for (name, var) in vs.named_parameters() {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let expected = &t[&format!("grad.{name}")];
        assert_close(
            &format!("grad of {name}"),
            g,
            expected,
            1e-3,
            1e-3 * max_abs(expected),
        );
    }
    for (k, v) in vs.state_dict().iter() {
        let expected = &t[&format!("after.{k}")];
        if k.ends_with("num_batches_tracked") {
            assert_eq!(v.to_scalar::<i64>().unwrap(), 2, "{k}");
        } else {
            assert_close(
                &format!("{k} after two steps"),
                v,
                expected,
                1e-4,
                1e-4 * max_abs(expected),
            );
        }
    }
}
