//! `ResNetConfig::infer` and `ResNetCheckpoint`: the architecture and class count of any file
//! holding a torchvision ResNet, wrapped or not.

use candle_core::{DType, Device};
use flambeau_core::VarStore;
use flambeau_vision::models::{ResNet, ResNetCheckpoint, ResNetConfig};

#[test]
fn every_architecture_is_recognised_through_wrappers() {
    for name in [
        "resnet18",
        "resnet34",
        "resnet50",
        "wide_resnet50_2",
        "resnext50_32x4d",
    ] {
        let vs = VarStore::new(&Device::Cpu, DType::F32);
        ResNet::new(vs.root(), ResNetConfig::by_name(name, 7).unwrap()).unwrap();
        let wrapped = vs
            .state_dict()
            .add_prefix("_orig_mod.")
            .add_prefix("module.");
        assert_eq!(ResNetConfig::architecture(&wrapped), Some(name));
        let config = ResNetConfig::infer(&wrapped).unwrap();
        assert_eq!(
            (config.name(), config.num_classes),
            (Some(name), 7),
            "{name}"
        );
    }
}

#[test]
fn a_file_opens_into_a_working_model_and_a_headless_one_says_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let vs = VarStore::with_seed(&Device::Cpu, DType::F32, 1);
    ResNet::new(vs.root(), ResNetConfig::resnet18(4)).unwrap();
    let file = dir.path().join("dp.pth");
    flambeau_serialize::save_state_dict(&vs.state_dict().add_prefix("module."), &file).unwrap();
    let (loaded, model) = ResNet::from_checkpoint(&file, &Device::Cpu).unwrap();
    assert_eq!(model.config(), &ResNetConfig::resnet18(4));
    let (a, b) = (vs.state_dict(), loaded.state_dict());
    let w = |sd: &flambeau_core::StateDict| {
        sd.get("fc.weight")
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    assert_eq!(w(&a), w(&b));

    let headless = dir.path().join("backbone.pth");
    let sd = vs.state_dict().drop_matching("^fc\\.").unwrap();
    flambeau_serialize::save_state_dict(&sd, &headless).unwrap();
    let opened = ResNetCheckpoint::open(&headless, &Device::Cpu).unwrap();
    assert_eq!(opened.num_classes, None);
    assert_eq!(opened.arch.as_deref(), Some("resnet18")); // recognised without the head
    let err = opened.config().unwrap_err().to_string();
    assert!(err.contains("has no `fc.weight`"), "{err}");
    assert!(err.contains("backbone.pth"), "{err}");
}
