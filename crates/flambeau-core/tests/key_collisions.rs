//! Key rules that map two keys onto one are an error naming the keys, never a dropped tensor.

use candle_core::{Device, Tensor};
use flambeau_core::{Error, KeyRule, StateDict};

fn sd(keys: &[&str]) -> StateDict {
    keys.iter()
        .enumerate()
        .map(|(i, k)| {
            (
                k.to_string(),
                Tensor::new(&[i as f32], &Device::Cpu).unwrap(),
            )
        })
        .collect()
}

#[track_caller]
fn collision(r: flambeau_core::Result<StateDict>) -> (String, Vec<(String, Vec<String>)>) {
    let err = r.expect_err("the rule maps two keys onto one");
    let msg = err.to_string();
    match err {
        Error::KeyCollision { collisions, .. } => (msg, collisions),
        other => panic!("expected a key collision, got {other}"),
    }
}

#[test]
fn strip_prefix_on_a_dict_holding_both_forms_names_both_keys() {
    let s = sd(&["module.w", "w", "module.b"]);
    let (msg, collisions) = collision(s.strip_prefix("module."));
    assert_eq!(
        collisions,
        [(
            "w".to_string(),
            vec!["module.w".to_string(), "w".to_string()]
        )]
    );
    assert!(
        msg.starts_with(
            r#"KeyRule::strip_prefix("module.") maps several keys onto one, which would drop tensors: `module.w`, `w` → `w`"#
        ),
        "{msg}"
    );
    // The rule value fails the same way.
    collision(KeyRule::strip_prefix("module.").apply(&s, &[]));
    // Without the clash it works, and keeps every tensor.
    let ok = sd(&["module.w", "module.b"])
        .strip_prefix("module.")
        .unwrap();
    assert_eq!(ok.keys().collect::<Vec<_>>(), ["w", "b"]);
}

#[test]
fn a_rename_merging_two_layers_lists_the_collisions() {
    let keys: Vec<String> = ["layer1", "layer2"]
        .iter()
        .flat_map(|l| (0..8).map(move |i| format!("{l}.0.conv{i}.weight")))
        .collect();
    let s = sd(&keys.iter().map(String::as_str).collect::<Vec<_>>());
    let (msg, collisions) = collision(s.rename_regex(r"^layer1\.", "layer2."));
    assert_eq!(collisions.len(), 8);
    assert_eq!(
        collisions[0],
        (
            "layer2.0.conv0.weight".to_string(),
            vec![
                "layer1.0.conv0.weight".to_string(),
                "layer2.0.conv0.weight".to_string()
            ]
        )
    );
    assert!(
        msg.starts_with(r#"KeyRule::rename("^layer1\\.", "layer2.") maps several keys"#),
        "{msg}"
    );
    assert!(msg.contains("and 3 more"), "{msg}");
    collision(KeyRule::rename(r"^layer1\.", "layer2.").apply(&s, &[]));
    // A rename onto fresh names keeps all 16.
    let ok = s.rename_regex(r"^layer(\d)\.", "stage$1.").unwrap();
    assert_eq!(ok.len(), 16);
}
