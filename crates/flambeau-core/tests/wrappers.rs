//! `StateDict::strip_wrappers`: the one rule for DataParallel's `module.` and torch.compile's
//! `_orig_mod.` prefixes.

use candle_core::{Device, Tensor};
use flambeau_core::StateDict;

fn sd(keys: &[&str]) -> StateDict {
    keys.iter()
        .map(|k| {
            (
                k.to_string(),
                Tensor::zeros(1, candle_core::DType::F32, &Device::Cpu).unwrap(),
            )
        })
        .collect()
}

fn keys(sd: &StateDict) -> Vec<&str> {
    sd.keys().collect()
}

#[test]
fn strips_dataparallel_compile_and_both_nestings() {
    let cases: [(&[&str], &[&str]); 4] = [
        (&["module.fc.weight", "module.fc.bias"], &["module."]),
        (&["_orig_mod.fc.weight"], &["_orig_mod."]),
        (&["module._orig_mod.fc.weight"], &["module.", "_orig_mod."]),
        (&["_orig_mod.module.fc.weight"], &["_orig_mod.", "module."]),
    ];
    for (names, prefixes) in cases {
        let d = sd(names);
        assert_eq!(d.wrapper_prefixes(), prefixes, "{names:?}");
        let stripped = d.strip_wrappers();
        assert!(
            keys(&stripped).iter().all(|k| k.starts_with("fc.")),
            "{names:?}"
        );
    }
}

#[test]
fn leaves_keys_alone_unless_every_key_is_wrapped() {
    let d = sd(&["module.fc.weight", "fc.bias"]);
    assert!(d.wrapper_prefixes().is_empty());
    assert_eq!(keys(&d.strip_wrappers()), ["module.fc.weight", "fc.bias"]);
    assert!(sd(&[]).wrapper_prefixes().is_empty());
    // A model whose own first module is called `module` is not a wrapper when the rest differ.
    assert_eq!(keys(&sd(&["fc.weight"]).strip_wrappers()), ["fc.weight"]);
}
