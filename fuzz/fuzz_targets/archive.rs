//! Arbitrary bytes as a whole file: the zip reader, the legacy reader, the pickle VM, and the
//! scan of storage location tags.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = flambeau_serialize::load_bytes(data, &Default::default());
    // What `flambeau doctor` reads to tell a GPU-saved file.
    let _ = flambeau_serialize::storage_locations_bytes(data);
});
