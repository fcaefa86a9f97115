//! `last.pth`, `best.pth` and the newest `epoch-N.pth` are separate files: overwriting one in
//! place (as `torch.save(obj, "last.pth")` does) leaves the others as they were.

use std::io::Write;

use candle_core::{Device, Tensor};
use flambeau_serialize::{Checkpoint, CheckpointManager, LoadConfig, StateDict};

fn at_epoch(epoch: i64, numel: usize) -> Checkpoint {
    let mut sd = StateDict::new();
    sd.insert(
        "w",
        Tensor::ones(numel, candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    let mut c = Checkpoint::new(sd);
    c.epoch = epoch;
    c
}

#[cfg(unix)]
#[test]
fn last_best_and_epoch_files_never_share_an_inode() {
    use std::os::unix::fs::MetadataExt;
    for keep in [0, 2] {
        let dir = tempfile::tempdir().unwrap();
        let m = CheckpointManager::new(dir.path(), keep).unwrap();
        for epoch in 0..3 {
            m.save_epoch(&at_epoch(epoch, 16), true).unwrap();
        }
        let mut files = vec![m.last_path(), m.best_path()];
        if keep > 0 {
            files.push(m.epoch_path(2));
        }
        let inodes: Vec<u64> = files
            .iter()
            .map(|f| std::fs::metadata(f).unwrap().ino())
            .collect();
        for (i, f) in files.iter().enumerate() {
            assert_eq!(std::fs::metadata(f).unwrap().nlink(), 1, "{f:?}");
            for j in 0..i {
                assert_ne!(inodes[i], inodes[j], "{f:?} aliases {:?}", files[j]);
            }
        }
        // Overwrite last.pth in place: same inode, new bytes.
        let best_before = std::fs::read(m.best_path()).unwrap();
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(m.last_path())
            .unwrap();
        f.write_all(b"rewritten by the user").unwrap();
        drop(f);
        assert_eq!(std::fs::read(m.best_path()).unwrap(), best_before);
        let cfg = LoadConfig::default();
        assert_eq!(Checkpoint::load(m.best_path(), &cfg).unwrap().epoch, 2);
        if keep > 0 {
            assert_eq!(Checkpoint::load(m.epoch_path(2), &cfg).unwrap().epoch, 2);
        }
    }
}

/// The cost of the copies for a ResNet-18-sized checkpoint (11.7 M float32 values, ~45 MB):
/// `cargo test -p flambeau-serialize --test checkpoint_copies -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check"]
fn measure_the_cost_of_separate_files() {
    let dir = tempfile::tempdir().unwrap();
    let m = CheckpointManager::new(dir.path(), 3).unwrap();
    let ckpt = at_epoch(0, 11_689_512);
    let time = |f: &dyn Fn()| {
        let start = std::time::Instant::now();
        for _ in 0..5 {
            f();
        }
        start.elapsed().as_secs_f64() * 1000.0 / 5.0
    };
    let one_file = time(&|| ckpt.save(dir.path().join("alone.pth")).unwrap());
    let epoch_last = time(&|| m.save_epoch(&ckpt, false).unwrap());
    let epoch_last_best = time(&|| m.save_epoch(&ckpt, true).unwrap());
    println!(
        "ResNet-18-sized checkpoint: one atomic save {one_file:.1} ms; epoch + last.pth {epoch_last:.1} ms; epoch + last.pth + best.pth {epoch_last_best:.1} ms"
    );
}
