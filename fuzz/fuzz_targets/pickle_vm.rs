//! Arbitrary bytes after a valid legacy header go straight into the pickle VM.
#![no_main]

use libfuzzer_sys::fuzz_target;

const HEADER: &[u8] = &[
    0x80, 2, 0x8a, 10, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, b'.', 0x80, 2,
    b'M', 0xe9, 0x03, b'.', 0x80, 2, b'}', b'.',
];

fuzz_target!(|data: &[u8]| {
    let mut file = HEADER.to_vec();
    file.extend_from_slice(data);
    let _ = flambeau_serialize::load_bytes(&file, &Default::default());
});
