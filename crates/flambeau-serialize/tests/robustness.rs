//! Bad input gets an error, never a panic, never an unbounded allocation.

use flambeau_serialize::{load_bytes, Error, LoadConfig, Value};
use flambeau_testkit::fixture;

/// Every `.pth`/`.pt` fixture: plain, legacy, deflated, every dtype and layout, TorchScript.
fn fixtures() -> Vec<(String, Vec<u8>)> {
    let dirs = ["serialize", "formats"].map(|d| fixture("flambeau-serialize", d));
    let mut out: Vec<(String, Vec<u8>)> = dirs
        .iter()
        .flat_map(|dir| std::fs::read_dir(dir).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pth" || e == "pt"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn every_truncation_of_every_fixture_is_an_error_not_a_panic() {
    for (name, bytes) in fixtures() {
        let step = (bytes.len() / 300).max(1);
        for cut in (0..bytes.len()).step_by(step) {
            let r = std::panic::catch_unwind(|| load_bytes(&bytes[..cut], &LoadConfig::default()));
            match r {
                Ok(Ok(_)) => {} // a cut inside trailing metadata can still leave a readable file
                Ok(Err(_)) => {}
                Err(_) => panic!("{name}: panic when cut at {cut}"),
            }
        }
    }
}

#[test]
fn flipped_bytes_never_panic() {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut rand = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for (name, bytes) in fixtures() {
        for _ in 0..300 {
            let mut b = bytes.clone();
            for _ in 0..1 + rand() % 4 {
                let i = (rand() as usize) % b.len();
                b[i] = rand() as u8;
            }
            let r = std::panic::catch_unwind(|| load_bytes(&b, &LoadConfig::default()));
            assert!(r.is_ok(), "{name}: panic on a corrupted copy");
        }
    }
}

/// A legacy-format header (magic, protocol 1001, sys_info) followed by `body`.
fn pickle(body: &[u8]) -> Vec<u8> {
    let mut v = vec![
        0x80, 2, 0x8a, 10, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, b'.',
    ];
    v.extend_from_slice(&[0x80, 2, b'M', 0xe9, 0x03, b'.']); // 1001
    v.extend_from_slice(&[0x80, 2, b'}', b'.']); // sys_info
    v.extend_from_slice(body);
    v
}

fn err(body: &[u8]) -> String {
    match load_bytes(&pickle(body), &LoadConfig::default()) {
        Err(e) => e.to_string(),
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

#[test]
fn hostile_pickles_are_rejected_with_context() {
    // A string claiming 4 GB.
    assert!(err(&[0x80, 2, b'X', 0xff, 0xff, 0xff, 0xff, b'a']).contains("truncated"));
    // Deep nesting.
    let mut deep = vec![0x80, 2];
    deep.extend(std::iter::repeat_n(b']', 10_000));
    deep.extend(std::iter::repeat_n(b'a', 9_999));
    deep.push(b'.');
    assert!(err(&deep).contains("nested deeper"));
    // Memo that was never stored, stack underflow, unknown opcode.
    assert!(err(&[0x80, 2, b'h', 9, b'.']).contains("never stored"));
    assert!(err(&[0x80, 2, b'a', b'.']).contains("underflow"));
    assert!(err(&[0x80, 2, 0xfe, b'.']).contains("opcode 0xfe"));
    // A zip header with nothing behind it.
    let e = load_bytes(b"PK\x03\x04garbage", &LoadConfig::default()).unwrap_err();
    assert!(matches!(e, Error::Truncated(_) | Error::Zip(_)), "{e}");
}

fn str_op(s: &str) -> Vec<u8> {
    let mut v = vec![b'X'];
    v.extend_from_slice(&(s.len() as u32).to_le_bytes());
    v.extend_from_slice(s.as_bytes());
    v
}

/// A legacy file whose one tensor views `view_len` elements of a 2-element storage.
fn legacy_tensor(view_len: u8) -> Vec<u8> {
    let mut b = vec![0x80, 2, b'c'];
    b.extend_from_slice(b"torch._utils\n_rebuild_tensor_v2\n(");
    b.push(b'(');
    b.extend(str_op("storage"));
    b.extend_from_slice(b"ctorch\nFloatStorage\n");
    b.extend(str_op("0"));
    b.extend(str_op("cpu"));
    b.extend_from_slice(&[
        b'K', 2, b'N', b't', b'Q', b'K', 0, b'K', view_len, 0x85, b'K', 1, 0x85, 0x89,
    ]);
    b.extend_from_slice(b"ccollections\nOrderedDict\n)Rt");
    b.extend_from_slice(b"R.");
    b.extend_from_slice(&[0x80, 2, b']']);
    b.extend(str_op("0"));
    b.extend_from_slice(b"a.");
    b.extend_from_slice(&2u64.to_le_bytes());
    b.extend_from_slice(&1.5f32.to_le_bytes());
    b.extend_from_slice(&2.5f32.to_le_bytes());
    pickle(&b)
}

#[test]
fn a_view_past_its_storage_is_refused() {
    let ok = load_bytes(&legacy_tensor(2), &LoadConfig::default()).unwrap();
    assert_eq!(
        ok.as_tensor().unwrap().to_vec1::<f32>().unwrap(),
        vec![1.5, 2.5]
    );
    let e = load_bytes(&legacy_tensor(200), &LoadConfig::default()).unwrap_err();
    assert!(
        matches!(
            e,
            Error::StorageTooSmall {
                needed: 200,
                available: 2,
                ..
            }
        ),
        "{e}"
    );
    // Cut inside the storage bytes: the announced size is past the end.
    let full = legacy_tensor(2);
    let e = load_bytes(&full[..full.len() - 3], &LoadConfig::default()).unwrap_err();
    assert!(e.to_string().contains("past the end"), "{e}");
}

#[test]
fn unknown_globals_become_inert_objects_and_nothing_runs() {
    // os.system('echo pwned') as a pickle: GLOBAL os system, 'echo pwned', TUPLE1, REDUCE.
    let mut body = vec![0x80, 2, b'c'];
    body.extend_from_slice(b"os\nsystem\n");
    body.push(b'X');
    body.extend_from_slice(&10u32.to_le_bytes());
    body.extend_from_slice(b"echo pwned");
    body.extend_from_slice(&[0x85, b'R', b'.']);
    body.extend_from_slice(&[0x80, 2, b']', b'.']); // the (empty) storage key list
    let v = load_bytes(&pickle(&body), &LoadConfig::default());
    // The object pickle is followed by an empty key list: the file loads, inertly.
    match v {
        Ok(Value::Object(o)) => {
            assert_eq!(o.class, "os.system");
            assert_eq!(o.args[0].as_str(), Some("echo pwned"));
        }
        other => panic!("{other:?}"),
    }
}
