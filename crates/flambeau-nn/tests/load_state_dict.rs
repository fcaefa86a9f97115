//! load_state_dict: PyTorch's exact error texts, the diagnosis, and the all-or-nothing rule.

use candle_core::{DType, Device, Tensor};
use flambeau_core::{Error, KeyRule, LoadOptions, StateDict, VarStore};
use flambeau_nn::{BatchNorm2d, BatchNormConfig, Conv2d, Conv2dConfig, Linear};
use flambeau_testkit::{fixture, load_json, to_f64_vec};

/// The model of the PyTorch fixture: `Net` with conv (3→4, k3), bn(4), fc(4→classes).
fn net(classes: usize) -> VarStore {
    let vs = VarStore::new(&Device::Cpu, DType::F32);
    vs.set_model_name("Net");
    let root = vs.root();
    Conv2d::new(root.pp("conv"), 3, 4, 3, Conv2dConfig::default()).unwrap();
    BatchNorm2d::new(root.pp("bn"), 4, BatchNormConfig::default()).unwrap();
    Linear::new(root.pp("fc"), 4, classes, true).unwrap();
    vs
}

fn message(name: &str) -> String {
    let msgs = load_json(&fixture("flambeau-nn", "load/messages.json"));
    msgs[name].as_str().unwrap().to_string()
}

fn zeros(shape: &[usize]) -> Tensor {
    Tensor::zeros(shape, DType::F32, &Device::Cpu).unwrap()
}

/// A deep copy of every tensor, to compare before/after.
fn snapshot(vs: &VarStore) -> Vec<(String, Vec<f64>)> {
    vs.state_dict()
        .iter()
        .map(|(k, t)| (k.to_string(), to_f64_vec(t)))
        .collect()
}

fn incompatible(err: Error) -> flambeau_core::IncompatibleKeys {
    err.incompatible().expect("a key error").clone()
}

#[test]
fn strict_error_text_is_pytorchs_word_for_word() {
    let vs = net(10);
    let mut sd = vs.state_dict().remove_then(|sd| {
        sd.remove("fc.bias");
    });
    sd.insert("extra.weight", zeros(&[1]));
    sd.insert("fc.weight", zeros(&[100, 4]));
    let err = incompatible(
        vs.load_state_dict(&sd, &LoadOptions::default())
            .unwrap_err(),
    );
    assert_eq!(err.pytorch_message(), message("strict_all_three"));
}

#[test]
fn size_mismatch_fails_even_when_not_strict_like_pytorch() {
    let vs = net(10);
    let mut sd = vs.state_dict();
    sd.insert("fc.weight", zeros(&[100, 4]));
    sd.insert("fc.bias", zeros(&[100]));
    let err = vs
        .load_state_dict(&sd, &LoadOptions::default().strict(false))
        .unwrap_err();
    let keys = incompatible(err);
    assert_eq!(keys.pytorch_message(), message("size_mismatch_non_strict"));
    // The diagnosis recognises a new classification head and names the option.
    let text = keys.to_string();
    assert!(
        text.contains(
            "only the head `fc` differs (100 outputs in the checkpoint, 10 in the model)"
        ),
        "{text}"
    );
    assert!(text.contains("skip_shape_mismatch(true)"), "{text}");
}

#[test]
fn skip_shape_mismatch_loads_the_rest_for_fine_tuning() {
    let vs = net(10);
    let fc_before = to_f64_vec(&vs.get("fc.weight").unwrap().as_tensor().copy().unwrap());
    let mut sd = StateDict::new();
    for (k, t) in vs.state_dict().iter() {
        sd.insert(
            k,
            (t.ones_like().unwrap() * 3.0)
                .unwrap()
                .to_dtype(t.dtype())
                .unwrap(),
        );
    }
    sd.insert("fc.weight", zeros(&[100, 4]));
    sd.insert("fc.bias", zeros(&[100]));
    let report = vs
        .load_state_dict(&sd, &LoadOptions::default().skip_shape_mismatch(true))
        .unwrap();
    assert_eq!(report.skipped_shape_mismatches.len(), 2);
    assert_eq!(report.skipped_shape_mismatches[0].checkpoint, vec![100, 4]);
    assert!(to_f64_vec(vs.get("conv.weight").unwrap().as_tensor())
        .iter()
        .all(|&v| v == 3.0));
    assert_eq!(
        to_f64_vec(vs.get("fc.weight").unwrap().as_tensor()),
        fc_before
    );
    assert_eq!(report.to_string(), "<All keys matched successfully>");
}

#[test]
fn non_strict_report_prints_like_incompatible_keys() {
    let vs = net(10);
    let mut sd = vs.state_dict();
    sd.remove("fc.bias");
    sd.remove("bn.running_var");
    sd.insert("x", zeros(&[1]));
    sd.insert("fc.bias.extra", zeros(&[1]));
    sd.insert("head.w", zeros(&[1]));
    let report = vs
        .load_state_dict(&sd, &LoadOptions::default().strict(false))
        .unwrap();
    assert_eq!(report.to_string(), message("non_strict_repr"));
    let all = vs
        .load_state_dict(&vs.state_dict(), &LoadOptions::default())
        .unwrap();
    assert_eq!(all.to_string(), message("all_matched_repr"));
}

#[test]
fn dataparallel_checkpoint_is_diagnosed_and_fixed_by_the_suggested_rule() {
    let vs = net(10);
    let sd = vs.state_dict().add_prefix("module.");
    let err = incompatible(
        vs.load_state_dict(&sd, &LoadOptions::default())
            .unwrap_err(),
    );
    assert_eq!(err.pytorch_message(), message("module_prefix"));
    let text = err.to_string();
    assert!(
        text.contains("all 9 unexpected keys are model keys with the prefix `module.`"),
        "{text}"
    );
    assert!(text.contains("DataParallel"), "{text}");
    assert!(
        text.contains(r#"KeyRule::strip_prefix("module.")"#),
        "{text}"
    );
    let report = vs
        .load_state_dict(
            &sd,
            &LoadOptions::default().rule(KeyRule::strip_prefix("module.")),
        )
        .unwrap();
    assert!(report.all_matched());
    assert_eq!(report.loaded.len(), 9);
}

#[test]
fn wrapped_model_with_bare_checkpoint_is_diagnosed_the_other_way() {
    let bare = net(10);
    let wrapped = VarStore::new(&Device::Cpu, DType::F32);
    let m = wrapped.root().pp("module");
    Conv2d::new(m.pp("conv"), 3, 4, 3, Conv2dConfig::default()).unwrap();
    BatchNorm2d::new(m.pp("bn"), 4, BatchNormConfig::default()).unwrap();
    Linear::new(m.pp("fc"), 4, 10, true).unwrap();
    let err = incompatible(
        wrapped
            .load_state_dict(&bare.state_dict(), &LoadOptions::default())
            .unwrap_err(),
    );
    let text = err.to_string();
    assert!(
        text.contains("missing keys are checkpoint keys with the prefix `module.` added"),
        "{text}"
    );
    assert!(text.contains(r#"KeyRule::add_prefix("module.")"#), "{text}");
    wrapped
        .load_state_dict(
            &bare.state_dict(),
            &LoadOptions::default().rule(KeyRule::add_prefix("module.")),
        )
        .unwrap();
}

#[test]
fn torch_compile_and_combined_prefixes_are_recognised() {
    let vs = net(10);
    for (prefix, cause) in [
        ("_orig_mod.", "torch.compile"),
        (
            "module._orig_mod.",
            "torch.compile'd model wrapped in nn.DataParallel",
        ),
        ("backbone.", "self.backbone"),
        ("encoder.", "submodule `encoder`"),
    ] {
        let sd = vs.state_dict().add_prefix(prefix);
        let text = vs
            .load_state_dict(&sd, &LoadOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            text.contains(&format!("prefix `{prefix}`")),
            "{prefix}: {text}"
        );
        assert!(text.contains(cause), "{prefix}: {text}");
        assert!(
            text.contains(&format!("KeyRule::strip_prefix({prefix:?})")),
            "{text}"
        );
    }
}

#[test]
fn pre_1_2_batch_norm_checkpoint_loads_and_keeps_the_counter() {
    let vs = net(10);
    let old = vs
        .state_dict()
        .drop_matching(r"num_batches_tracked$")
        .unwrap();
    let mut old = old;
    old.clear_metadata();
    let report = vs.load_state_dict(&old, &LoadOptions::default()).unwrap();
    assert_eq!(report.to_string(), message("pre_1_2_bn_repr"));
    assert_eq!(report.filled, vec!["bn.num_batches_tracked".to_string()]);
    // With BatchNorm's version 2 recorded, the counter really is missing.
    let mut new = vs
        .state_dict()
        .drop_matching(r"num_batches_tracked$")
        .unwrap();
    new.set_metadata(vec![("bn".into(), 2)]);
    let err = incompatible(
        vs.load_state_dict(&new, &LoadOptions::default())
            .unwrap_err(),
    );
    assert_eq!(err.missing_keys, vec!["bn.num_batches_tracked".to_string()]);
}

#[test]
fn failed_load_changes_nothing() {
    let vs = net(10);
    let before = snapshot(&vs);
    // Every key right and filled with new values except the very last one, whose shape is wrong.
    let mut sd = StateDict::new();
    for (k, t) in vs.state_dict().iter() {
        sd.insert(
            k,
            (t.to_dtype(DType::F64).unwrap() + 7.0)
                .unwrap()
                .to_dtype(t.dtype())
                .unwrap(),
        );
    }
    sd.insert("fc.bias", zeros(&[11]));
    assert!(vs.load_state_dict(&sd, &LoadOptions::default()).is_err());
    assert_eq!(snapshot(&vs), before);
    // The same with only the last key missing.
    sd.remove("fc.bias");
    assert!(vs.load_state_dict(&sd, &LoadOptions::default()).is_err());
    assert_eq!(snapshot(&vs), before);
}

#[test]
fn dtype_is_cast_like_copy_and_reported() {
    let vs = net(10);
    let mut sd = StateDict::new();
    for (k, t) in vs.state_dict().iter() {
        let target = if k.starts_with("conv") {
            DType::F16
        } else if k.starts_with("fc") {
            DType::F64
        } else {
            t.dtype()
        };
        let v = (t.ones_like().unwrap().to_dtype(DType::F64).unwrap() * 0.5).unwrap();
        sd.insert(k, v.to_dtype(target).unwrap());
    }
    let report = vs.load_state_dict(&sd, &LoadOptions::default()).unwrap();
    assert_eq!(report.dtype_casts.len(), 4);
    assert_eq!(report.dtype_casts[0].from, DType::F16);
    let w = vs.get("conv.weight").unwrap();
    assert_eq!(w.dtype(), DType::F32);
    assert!(to_f64_vec(w.as_tensor()).iter().all(|&v| v == 0.5));
    let err = vs
        .load_state_dict(&sd, &LoadOptions::default().cast_dtype(false))
        .unwrap_err();
    assert!(matches!(err, Error::Dtype { .. }), "{err}");
}

#[test]
fn loading_a_models_own_state_dict_back_works() {
    let vs = net(10);
    let before = snapshot(&vs);
    vs.load_state_dict(&vs.state_dict(), &LoadOptions::default())
        .unwrap();
    assert_eq!(snapshot(&vs), before);
}

#[test]
fn shared_parameter_loads_under_either_name() {
    let vs = VarStore::new(&Device::Cpu, DType::F32);
    let fc = Linear::new(vs.root().pp("fc"), 2, 2, false).unwrap();
    let var = vs.get("fc.weight").unwrap();
    vs.root().pp("f3").share_param("weight", &var).unwrap();
    let mut sd = StateDict::new();
    sd.insert("fc.weight", zeros(&[2, 2]));
    sd.insert("f3.weight", zeros(&[2, 2]));
    vs.load_state_dict(&sd, &LoadOptions::default()).unwrap();
    assert!(to_f64_vec(fc.weight()).iter().all(|&v| v == 0.0));
    assert_eq!(vs.parameters().len(), 1);
}

#[test]
fn bad_key_rule_is_an_error_not_a_panic() {
    let vs = net(10);
    let err = vs
        .load_state_dict(
            &vs.state_dict(),
            &LoadOptions::default().rule(KeyRule::drop("(")),
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("invalid regular expression"),
        "{err}"
    );
    // The rule's own error, not wrapped in another layer.
    assert!(matches!(err, Error::Regex { .. }), "{err:?}");
}

/// Small helper so tests read top-down.
trait Then {
    fn remove_then(self, f: impl FnOnce(&mut Self)) -> Self;
}
impl Then for StateDict {
    fn remove_then(mut self, f: impl FnOnce(&mut Self)) -> Self {
        f(&mut self);
        self
    }
}
