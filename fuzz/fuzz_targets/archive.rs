//! Arbitrary bytes as a whole file: the zip reader, the legacy reader and the pickle VM.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = flambeau_serialize::load_bytes(data, &Default::default());
});
