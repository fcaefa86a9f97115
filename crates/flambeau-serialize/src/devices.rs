//! [`storage_locations`]: the devices a `torch.save` file's storages were saved from (`cpu`,
//! `cuda:0`, …), read from the persistent ids of its pickle without reading any tensor data.
//! A file saved on a GPU is what makes `torch.load` fail on a CPU-only machine without
//! `map_location`; flambeau itself ignores the tags.

use std::path::Path;

use flambeau_core::Value;

use crate::archive::{legacy, zip_reader::ZipArchive};
use crate::pickle::{Resolver, Vm};
use crate::{Error, Result};

/// Records the location tag of every persistent id, distinct, in first-use order.
#[derive(Default)]
struct Locations(Vec<String>);

impl Resolver for Locations {
    fn persistent(&mut self, pid: &Value) -> Result<Option<Value>> {
        let tag = pid.as_seq().and_then(|items| items.get(3)?.as_str());
        if let Some(tag) = tag {
            if !self.0.iter().any(|t| t == tag) {
                self.0.push(tag.to_string());
            }
        }
        Ok(None)
    }
    fn typed(&mut self, _key: &str, _dtype: &str) -> Result<Option<Value>> {
        Ok(None)
    }
}

/// The location tags of the storages in the `torch.save` or TorchScript file at `path`, distinct,
/// in first-use order. Empty for files that carry none (`.safetensors`, sharded checkpoints'
/// index files, directories).
pub fn storage_locations(path: impl AsRef<Path>) -> Result<Vec<String>> {
    let path = path.as_ref();
    if path.is_dir()
        || path
            .extension()
            .is_some_and(|e| e == "safetensors" || e == "json")
    {
        return Ok(Vec::new());
    }
    let data = std::fs::read(path).map_err(|e| crate::files::read_error(path, e))?;
    storage_locations_bytes(&data)
}

/// [`storage_locations`] of a whole file in memory. Bytes that are neither a zip archive nor a
/// legacy stream have no tags (an empty list); a malformed pickle is an error.
pub fn storage_locations_bytes(data: &[u8]) -> Result<Vec<String>> {
    let mut found = Locations::default();
    if data.starts_with(b"PK\x03\x04") {
        let zip = ZipArchive::new(data)?;
        let prefix = zip
            .entries()
            .first()
            .and_then(|e| e.name.find('/').map(|i| e.name[..=i].to_string()))
            .unwrap_or_default();
        let Some(pkl) = zip.find(&format!("{prefix}data.pkl")) else {
            return Ok(Vec::new());
        };
        let pickle = zip.read(data, pkl)?;
        Vm::new(&pickle, &mut found).run()?;
    } else if legacy::is_legacy(data) {
        // Magic number, protocol version, sys_info, then the object: its persistent ids.
        let mut pos = 0;
        for _ in 0..4 {
            let rest = data.get(pos..).ok_or_else(|| {
                Error::Truncated("legacy stream ends before its object pickle".into())
            })?;
            let mut vm = Vm::new(rest, &mut found);
            vm.run()?;
            pos += vm.position();
        }
    }
    Ok(found.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_that_are_no_checkpoint_have_no_tags() {
        assert!(storage_locations_bytes(b"hello").unwrap().is_empty());
        assert!(storage_locations_bytes(b"PK\x03\x04garbage").is_err());
    }
}
