//! `flambeau convert` never drops a tensor through colliding key rules and never replaces
//! something that is not a regular file.

mod common;
use common::flambeau;

use std::path::Path;
use std::process::Command;

use candle_core::{Device, Tensor};
use flambeau_core::StateDict;

fn write(path: &Path, keys: &[&str]) {
    let mut sd = StateDict::new();
    for (i, k) in keys.iter().enumerate() {
        sd.insert(*k, Tensor::new(&[i as f32], &Device::Cpu).unwrap());
    }
    flambeau_serialize::save_state_dict(&sd, path).unwrap();
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn colliding_key_rules_fail_naming_the_keys_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.pth");
    let out = dir.path().join("out.pth");
    write(&input, &["module.w", "w", "module.b"]);
    let (ok, text) = flambeau(&["convert", s(&input), s(&out), "--strip-prefix", "module."]);
    assert!(!ok, "{text}");
    assert!(
        text.contains(r#"KeyRule::strip_prefix("module.") maps several keys onto one, which would drop tensors: `module.w`, `w` → `w`"#),
        "{text}"
    );
    assert!(!out.exists());

    write(&input, &["layer1.0.weight", "layer2.0.weight", "fc.weight"]);
    for output in [&out, &dir.path().join("out.safetensors")] {
        let (ok, text) = flambeau(&[
            "convert",
            s(&input),
            s(output),
            "--rename",
            r"^layer1\.=layer2.",
        ]);
        assert!(!ok, "{text}");
        assert!(
            text.contains("`layer1.0.weight`, `layer2.0.weight` → `layer2.0.weight`"),
            "{text}"
        );
        assert!(!output.exists());
    }
    // A rule without a collision still converts every tensor.
    let (ok, text) = flambeau(&[
        "convert",
        s(&input),
        s(&out),
        "--rename",
        r"^layer(\d)\.=stage$1.",
    ]);
    assert!(ok, "{text}");
    let sd = flambeau_serialize::load_state_dict_file(&out, &Default::default()).unwrap();
    assert_eq!(sd.len(), 3);
}

#[cfg(unix)]
#[test]
fn non_regular_outputs_are_refused_and_survive() {
    use std::os::unix::fs::FileTypeExt;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.pth");
    write(&input, &["w"]);
    let (ok, text) = flambeau(&["convert", s(&input), "/dev/null"]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("refusing to write /dev/null: it is a character device"),
        "{text}"
    );
    assert!(std::fs::symlink_metadata("/dev/null")
        .unwrap()
        .file_type()
        .is_char_device());

    let fifo = dir.path().join("pipe.pth");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let (ok, text) = flambeau(&["convert", s(&input), s(&fifo)]);
    assert!(!ok, "{text}");
    assert!(text.contains("it is a FIFO"), "{text}");
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());

    // A symlink is written through: the link stays and its target gets the new file.
    let target = dir.path().join("target.pth");
    write(&target, &["old"]);
    let link = dir.path().join("link.pth");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let (ok, text) = flambeau(&["convert", s(&input), s(&link)]);
    assert!(ok, "{text}");
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    let sd = flambeau_serialize::load_state_dict_file(&target, &Default::default()).unwrap();
    assert!(sd.contains_key("w") && !sd.contains_key("old"));
}

#[test]
fn a_directory_as_input_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("weights.pth");
    std::fs::create_dir(&input).unwrap();
    let (ok, text) = flambeau(&["convert", s(&input), s(&dir.path().join("out.pth"))]);
    assert!(!ok, "{text}");
    assert!(
        text.contains(&format!(
            "{} is a directory without model.safetensors, pytorch_model.bin or a *.index.json of shards; give the checkpoint file itself",
            input.display()
        )),
        "{text}"
    );
    assert!(!text.contains("os error 19"), "{text}");
}
