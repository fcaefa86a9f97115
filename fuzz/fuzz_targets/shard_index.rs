//! Arbitrary text as a sharded checkpoint's index JSON (`*.index.json`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok((shards, map)) = flambeau_serialize::sharded::parse_index(text) {
            // Every shard it names is a plain file name beside the index.
            for s in shards.iter().chain(map.values()) {
                assert!(!s.contains('/') && !s.contains('\\') && s != ".." && !s.is_empty());
            }
        }
    }
});
