//! The legacy format (PyTorch < 1.6, or `_use_new_zipfile_serialization=False`): pickles one
//! after another — magic number, protocol version, sys_info, the object, the storage keys — then
//! each storage as an 8-byte element count and its raw bytes.

use std::collections::HashMap;

use flambeau_core::Value;

use crate::pickle::globals::UNTYPED;
use crate::pickle::{Resolver, Vm};
use crate::storage::{self, StorageType};
use crate::{Error, Result};

/// `0x1950a86a20f9469cfc6c` as pickle's LONG1 bytes.
const MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
const PROTOCOL_VERSION: i64 = 1001;

/// True when `data` starts with the legacy magic number pickle.
pub fn is_legacy(data: &[u8]) -> bool {
    // PROTO 2, LONG1 10 bytes
    data.len() >= 14 && data[0] == 0x80 && data[2] == 0x8a && data[3] == 10 && data[4..14] == MAGIC
}

/// Storage infos collected from persistent ids: key → storage type (and the view, if any).
#[derive(Default)]
struct Scan {
    types: HashMap<String, &'static StorageType>,
}

/// Pass 1: records the storages without reading them.
impl Resolver for Scan {
    fn persistent(&mut self, pid: &Value) -> Result<Option<Value>> {
        let (key, st) = parse_pid(pid)?;
        // An untyped storage's element count is in bytes; its dtype comes with the tensor.
        let st = st.or_else(|| storage::by_dtype("uint8"));
        if let Some(st) = st {
            self.types.insert(key, st);
        }
        Ok(None)
    }
    fn typed(&mut self, _key: &str, _dtype: &str) -> Result<Option<Value>> {
        Ok(None)
    }
}

/// `('storage', torch.XStorage, key, location, numel, view_metadata)` → (key, type).
fn parse_pid(pid: &Value) -> Result<(String, Option<&'static StorageType>)> {
    let bad = |m: &str| Error::Pickle {
        offset: 0,
        message: format!("persistent id {m}"),
    };
    let items = pid.as_seq().ok_or_else(|| bad("is not a tuple"))?;
    if items.first().and_then(Value::as_str) != Some("storage") || items.len() < 3 {
        return Err(bad("is not ('storage', type, key, …)"));
    }
    let class = match &items[1] {
        Value::Object(o) => o.class.clone(),
        other => return Err(bad(&format!("has a storage type of {}", other.type_name()))),
    };
    let key = match &items[2] {
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        _ => return Err(bad("has a non-string key")),
    };
    if class == UNTYPED || class == "torch.storage.UntypedStorage" {
        return Ok((key, None));
    }
    let short = class.strip_prefix("torch.").unwrap_or(&class);
    let st = storage::by_class(short).ok_or_else(|| Error::UnsupportedDtype(class.clone()))?;
    Ok((key, Some(st)))
}

/// Pass 2: storages read from their places after the pickles.
struct Storages<'a> {
    data: &'a [u8],
    places: HashMap<String, (usize, usize)>,
    types: HashMap<String, &'static StorageType>,
    cache: HashMap<String, Value>,
    device: candle_core::Device,
}

impl Resolver for Storages<'_> {
    fn persistent(&mut self, pid: &Value) -> Result<Option<Value>> {
        let (key, st) = parse_pid(pid)?;
        if st.is_none() {
            return Ok(Some(Value::Object(flambeau_core::Object {
                class: UNTYPED.into(),
                args: vec![Value::Str(key)],
                state: None,
            })));
        }
        if let Some(t) = self.cache.get(&key) {
            return Ok(Some(t.clone()));
        }
        let st = self
            .types
            .get(&key)
            .ok_or_else(|| Error::MissingRecord(format!("storage {key}")))?;
        let &(start, len) = self
            .places
            .get(&key)
            .ok_or_else(|| Error::MissingRecord(format!("storage {key}")))?;
        let t = storage::to_device(
            storage::value_from_bytes(&self.data[start..start + len], st, false)?,
            &self.device,
        )?;
        self.cache.insert(key, t.clone());
        Ok(Some(t))
    }
    fn typed(&mut self, key: &str, dtype: &str) -> Result<Option<Value>> {
        let cache_key = format!("{key}:{dtype}");
        if let Some(t) = self.cache.get(&cache_key) {
            return Ok(Some(t.clone()));
        }
        let Some(st) = storage::by_dtype(dtype) else {
            return Ok(Some(Value::Object(flambeau_core::Object {
                class: format!("torch.{dtype}"),
                args: vec![Value::Str(key.to_string())],
                state: None,
            })));
        };
        let &(start, len) = self
            .places
            .get(key)
            .ok_or_else(|| Error::MissingRecord(format!("storage {key}")))?;
        let t = storage::to_device(
            storage::value_from_bytes(&self.data[start..start + len], st, false)?,
            &self.device,
        )?;
        self.cache.insert(cache_key, t.clone());
        Ok(Some(t))
    }
}

/// Reads a legacy file.
pub fn load(data: &[u8], device: &candle_core::Device) -> Result<Value> {
    let mut pos = 0;
    let next = |resolver: &mut dyn Resolver, pos: &mut usize| -> Result<Value> {
        let mut vm = Vm::new(&data[*pos..], resolver);
        let v = vm.run()?;
        *pos += vm.position();
        Ok(v)
    };
    let mut none = Scan::default();
    next(&mut none, &mut pos)?; // magic number (checked by is_legacy)
    match next(&mut none, &mut pos)? {
        Value::Int(PROTOCOL_VERSION) => {}
        other => {
            return Err(Error::not_a_checkpoint(format!(
                "legacy protocol version {other:?}, expected {PROTOCOL_VERSION}"
            )))
        }
    }
    let sys_info = next(&mut none, &mut pos)?;
    let little = sys_info
        .get("little_endian")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    if !little {
        return Err(Error::UnsupportedDtype("big-endian legacy file".into()));
    }
    let object_start = pos;
    let mut scan = Scan::default();
    next(&mut scan, &mut pos)?;
    let keys = next(&mut none, &mut pos)?;
    let keys: Vec<String> = keys
        .as_seq()
        .ok_or_else(|| Error::Pickle {
            offset: pos,
            message: "storage key list is not a list".into(),
        })?
        .iter()
        .map(|k| {
            k.as_str().map(String::from).ok_or_else(|| Error::Pickle {
                offset: pos,
                message: "storage key is not a string".into(),
            })
        })
        .collect::<Result<_>>()?;
    let mut places = HashMap::new();
    for key in keys {
        let st = scan
            .types
            .get(&key)
            .ok_or_else(|| Error::MissingRecord(format!("type of storage {key}")))?;
        let count = data
            .get(pos..pos + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8")))
            .ok_or_else(|| Error::Truncated(format!("size of storage {key}")))?;
        pos += 8;
        let len = usize::try_from(count)
            .ok()
            .and_then(|c| c.checked_mul(st.size))
            .filter(|&l| pos.checked_add(l).is_some_and(|end| end <= data.len()))
            .ok_or_else(|| {
                Error::Truncated(format!(
                    "storage {key} announces {count} elements past the end of the file"
                ))
            })?;
        places.insert(key, (pos, len));
        pos += len;
    }
    let mut storages = Storages {
        data,
        places,
        types: scan.types,
        cache: HashMap::new(),
        device: device.clone(),
    };
    let mut vm = Vm::new(&data[object_start..], &mut storages);
    vm.run()
}
