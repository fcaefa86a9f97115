//! ResNets against torchvision: state_dict layout for every architecture, eval logits, and one
//! training step's gradients and running statistics.

use candle_core::{DType, Device, ModuleT, Var};
use flambeau_core::{LoadOptions, StateDict, VarStore};
use flambeau_nn::loss::cross_entropy;
use flambeau_testkit::{assert_close, fixture, large_fixture, load_json, load_tensors};
use flambeau_vision::models::resnet::BlockKind;
use flambeau_vision::models::{ResNet, ResNetConfig};

#[test]
fn every_architecture_has_torchvisions_keys_shapes_and_order() {
    let layouts = load_json(&fixture("flambeau-vision", "vision/layouts.json"));
    for (name, expected) in layouts.as_object().unwrap() {
        let vs = VarStore::new(&Device::Cpu, DType::F32);
        ResNet::new(vs.root(), ResNetConfig::by_name(name, 10).unwrap()).unwrap();
        let got: Vec<(String, Vec<usize>, DType)> = vs
            .state_dict()
            .iter()
            .map(|(k, t)| (k.to_string(), t.dims().to_vec(), t.dtype()))
            .collect();
        let want: Vec<(String, Vec<usize>, DType)> = expected
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let dims = e[1]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap() as usize)
                    .collect();
                let dtype = if e[2] == "torch.int64" {
                    DType::I64
                } else {
                    DType::F32
                };
                (e[0].as_str().unwrap().to_string(), dims, dtype)
            })
            .collect();
        assert_eq!(got.len(), want.len(), "{name}: number of entries");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g, w, "{name}");
        }
    }
}

#[test]
fn zero_init_residual_zeroes_the_last_batch_norm_of_each_block() {
    let vs = VarStore::new(&Device::Cpu, DType::F32);
    let mut cfg = ResNetConfig::resnet18(10);
    cfg.zero_init_residual = true;
    ResNet::new(vs.root(), cfg).unwrap();
    let sd = vs.state_dict();
    let w = sd.get("layer1.0.bn2.weight").unwrap();
    assert_eq!(
        w.abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap(),
        0.0
    );
    let w = sd.get("layer1.0.bn1.weight").unwrap();
    assert_eq!(w.sum_all().unwrap().to_scalar::<f32>().unwrap(), 64.0);
}

#[test]
fn invalid_configurations_are_errors() {
    let vs = VarStore::new(&Device::Cpu, DType::F32);
    let mut cfg = ResNetConfig::resnet18(10);
    cfg.groups = 2;
    assert!(ResNet::new(vs.root(), cfg).is_err());
    assert!(ResNetConfig::by_name("resnet19", 10).is_err());
    assert_eq!(
        ResNetConfig::resnext50_32x4d(10).block,
        BlockKind::Bottleneck
    );
}

fn load_into(vs: &VarStore, path: &std::path::Path) {
    let sd: StateDict = load_tensors(path).into_iter().collect();
    // safetensors does not keep order; strict matching does not care.
    vs.load_state_dict(&sd, &LoadOptions::default()).unwrap();
}

#[test]
fn eval_logits_match_torchvision() {
    let (Some(weights), Some(io)) = (
        large_fixture("resnet18.safetensors"),
        large_fixture("resnet18_eval.safetensors"),
    ) else {
        return;
    };
    let vs = VarStore::new(&Device::Cpu, DType::F32);
    let model = ResNet::new(vs.root(), ResNetConfig::resnet18(10)).unwrap();
    load_into(&vs, &weights);
    let t = load_tensors(&io);
    let logits = model.forward_t(&t["x"], false).unwrap();
    assert_close("resnet18 eval logits", &logits, &t["logits"], 1e-4, 1e-4);
}

#[test]
fn one_training_step_matches_torchvision_gradients() {
    let (Some(init), Some(step)) = (
        large_fixture("resnet_small_init.safetensors"),
        large_fixture("resnet_small_step.safetensors"),
    ) else {
        return;
    };
    let vs = VarStore::new(&Device::Cpu, DType::F32);
    let cfg = ResNetConfig {
        layers: [1, 1, 1, 1],
        ..ResNetConfig::resnet18(10)
    };
    let model = ResNet::new(vs.root(), cfg).unwrap();
    load_into(&vs, &init);
    let t = load_tensors(&step);
    let x = Var::from_tensor(&t["x"]).unwrap();
    let logits = model.forward_t(x.as_tensor(), true).unwrap();
    assert_close("train-mode logits", &logits, &t["logits"], 1e-4, 1e-4);
    let loss = cross_entropy(&logits, &t["y"], &Default::default()).unwrap();
    assert_close("loss", &loss, &t["loss"], 1e-5, 1e-6);
    let grads = loss.backward().unwrap();
    for (name, var) in vs.named_parameters() {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let expected = &t[&format!("grad.{name}")];
        // Relative to the gradient's own scale: tiny entries carry rounding noise.
        let scale = expected
            .abs()
            .unwrap()
            .max_keepdim(0)
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64;
        assert_close(&format!("grad of {name}"), g, expected, 1e-4, 1e-4 * scale);
    }
    for (k, v) in vs.state_dict().iter() {
        if let Some(expected) = t.get(&format!("after.{k}")) {
            if k.ends_with("num_batches_tracked") {
                assert_eq!(v.to_scalar::<i64>().unwrap(), 1, "{k}");
            } else {
                assert_close(&format!("running stat {k}"), v, expected, 1e-5, 1e-6);
            }
        }
    }
}
