//! Where a save may write: regular files are replaced atomically, symlinks written through,
//! anything else (device nodes, FIFOs, directories) refused and left as it was; errors name the
//! user's path, and a directory given as input says so.

use std::path::Path;

use candle_core::{Device, Tensor};
use flambeau_serialize::{
    load_state_dict_file, safetensors, save_state_dict, LoadConfig, StateDict,
};

fn sd(v: f32) -> StateDict {
    let mut sd = StateDict::new();
    sd.insert("w", Tensor::new(&[v, v], &Device::Cpu).unwrap());
    sd
}

fn first(path: &Path) -> f32 {
    let sd = load_state_dict_file(path, &LoadConfig::default()).unwrap();
    sd.get("w").unwrap().to_vec1::<f32>().unwrap()[0]
}

/// Both writers, .pth and .safetensors.
fn save_both(sd: &StateDict, path: &Path) -> Vec<String> {
    let mut errors = Vec::new();
    if let Err(e) = save_state_dict(sd, path) {
        errors.push(e.to_string());
    }
    if let Err(e) = safetensors::save(sd, path) {
        errors.push(e.to_string());
    }
    errors
}

#[cfg(unix)]
#[test]
fn dev_null_is_refused_and_survives() {
    use std::os::unix::fs::FileTypeExt;
    let errors = save_both(&sd(1.0), Path::new("/dev/null"));
    assert_eq!(errors.len(), 2, "{errors:?}");
    for e in &errors {
        assert!(
            e.starts_with("refusing to write /dev/null: it is a character device"),
            "{e}"
        );
    }
    let meta = std::fs::symlink_metadata("/dev/null").unwrap();
    assert!(meta.file_type().is_char_device());
    assert!(!Path::new(&format!("/dev/.null.tmp-{}", std::process::id())).exists());
}

#[cfg(unix)]
#[test]
fn a_fifo_and_a_directory_are_refused_and_left_in_place() {
    use std::os::unix::fs::FileTypeExt;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("out.pth");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    for e in save_both(&sd(1.0), &fifo) {
        assert!(e.contains("it is a FIFO (named pipe)"), "{e}");
    }
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());

    let sub = dir.path().join("run.pth");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(sub.join("keep.txt"), b"data").unwrap();
    let errors = save_both(&sd(1.0), &sub);
    assert_eq!(errors.len(), 2);
    for e in errors {
        assert!(e.contains("it is a directory"), "{e}");
    }
    assert_eq!(std::fs::read(sub.join("keep.txt")).unwrap(), b"data");
    // Nothing was left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[cfg(unix)]
#[test]
fn a_symlink_is_written_through_to_its_target() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real.pth");
    let link = dir.path().join("link.pth");
    save_state_dict(&sd(1.0), &real).unwrap();
    std::os::unix::fs::symlink("real.pth", &link).unwrap();
    save_state_dict(&sd(2.0), &link).unwrap();
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("real.pth"));
    assert_eq!(first(&real), 2.0);
    assert_eq!(first(&link), 2.0);

    let st_real = dir.path().join("real.safetensors");
    let st_link = dir.path().join("link.safetensors");
    safetensors::save(&sd(3.0), &st_real).unwrap();
    std::os::unix::fs::symlink(&st_real, &st_link).unwrap();
    safetensors::save(&sd(4.0), &st_link).unwrap();
    assert!(std::fs::symlink_metadata(&st_link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(first(&st_real), 4.0);

    // A symlink to a device or a dangling one is refused.
    let to_null = dir.path().join("null.pth");
    std::os::unix::fs::symlink("/dev/null", &to_null).unwrap();
    let e = save_state_dict(&sd(1.0), &to_null).unwrap_err().to_string();
    assert!(
        e.contains("a symlink to /dev/null (a character device)"),
        "{e}"
    );
    let dangling = dir.path().join("dangling.pth");
    std::os::unix::fs::symlink("missing/x.pth", &dangling).unwrap();
    let e = save_state_dict(&sd(1.0), &dangling)
        .unwrap_err()
        .to_string();
    assert!(e.contains("a symlink whose target does not exist"), "{e}");
}

#[test]
fn a_missing_directory_names_the_users_path_not_the_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("no-such-dir").join("model.pth");
    for e in save_both(&sd(1.0), &out) {
        assert!(
            e.starts_with(&format!("cannot write {}: ", out.display())),
            "{e}"
        );
        assert!(e.contains("does not exist; create it first"), "{e}");
        assert!(!e.contains(".tmp-") && !e.contains("<archive>"), "{e}");
    }
}

#[test]
fn a_directory_given_as_input_says_so() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["weights.pth", "weights.safetensors"] {
        let p = dir.path().join(name);
        std::fs::create_dir(&p).unwrap();
        let e = load_state_dict_file(&p, &LoadConfig::default())
            .unwrap_err()
            .to_string();
        // A directory may hold a sharded checkpoint; this one holds none, and says so.
        assert!(
            e.contains(&format!(
                "{} is a directory without model.safetensors, pytorch_model.bin or a *.index.json of shards",
                p.display()
            )),
            "{e}"
        );
        assert!(!e.contains("os error"), "{e}");
    }
}
