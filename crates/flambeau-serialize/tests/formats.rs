//! Files PyTorch opens beyond a plain torch.save: records re-zipped with deflate, every dtype
//! and layout, sharded checkpoints and TorchScript archives — each made by real PyTorch
//! (`cargo xtask fixtures formats`).

use flambeau_serialize::{find_state_dict, load, load_bytes, Error, LoadConfig, Value};
use flambeau_testkit::{fixture, to_f64_vec};

fn file(name: &str) -> std::path::PathBuf {
    fixture("flambeau-serialize", &format!("formats/{name}"))
}

fn open(name: &str) -> Value {
    load(file(name), &LoadConfig::default()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn a_pth_rezipped_with_deflate_reads_like_the_original() {
    let deflated = find_state_dict(&open("deflated.pth")).unwrap().state_dict;
    let keys: Vec<&str> = deflated.keys().collect();
    assert_eq!(
        keys,
        [
            "conv.weight",
            "conv.bias",
            "bn.weight",
            "bn.bias",
            "bn.running_mean",
            "bn.running_var",
            "bn.num_batches_tracked",
            "fc.weight",
            "fc.bias"
        ]
    );
    assert_eq!(
        to_f64_vec(deflated.get("bn.running_var").unwrap()),
        vec![1.0; 4]
    );
    assert_eq!(deflated.get("conv.weight").unwrap().dims(), [4, 3, 3, 3]);
}

/// Flips one byte inside the first deflated record's compressed data.
fn corrupt_first_deflated_record(data: &mut [u8]) {
    // Local header: name length at 26, extra length at 28, data at 30 + both.
    let n = u16::from_le_bytes([data[26], data[27]]) as usize;
    let e = u16::from_le_bytes([data[28], data[29]]) as usize;
    let start = 30 + n + e;
    data[start + 3] ^= 0x55;
}

#[test]
fn a_corrupt_deflated_record_is_a_clear_error() {
    let mut data = std::fs::read(file("deflated.pth")).unwrap();
    corrupt_first_deflated_record(&mut data);
    let err = load_bytes(&data, &LoadConfig::default()).unwrap_err();
    assert!(matches!(err, Error::Zip(_)), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("corrupt") && msg.contains("data.pkl"), "{msg}");
}

#[test]
fn a_deflated_record_that_lies_about_its_size_is_refused_before_allocating() {
    let mut data = std::fs::read(file("deflated.pth")).unwrap();
    // The central directory's first record: uncompressed size at +24.
    let cd = (0..data.len() - 4)
        .find(|&i| data[i..i + 4] == [0x50, 0x4b, 0x01, 0x02])
        .unwrap();
    data[cd + 24..cd + 28].copy_from_slice(&0x7fff_fff0u32.to_le_bytes());
    let msg = load_bytes(&data, &LoadConfig::default())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("more than DEFLATE can expand"), "{msg}");
}
