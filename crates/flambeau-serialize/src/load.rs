//! `load`: any `torch.save` file into a [`Value`], tensors on the device you ask for.

use std::collections::HashMap;
use std::path::Path;

use candle_core::Device;
use flambeau_core::{StateDict, Value};

use crate::archive::{legacy, zip_reader::ZipArchive};
use crate::pickle::globals::UNTYPED;
use crate::pickle::{Resolver, Vm};
use crate::{storage, torchscript, Error, Result};

/// How to load (PyTorch's `map_location` and friends).
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Every tensor is built here, whatever device the file was saved from (`cuda:1` on a
    /// CPU-only machine included).
    pub device: Device,
}

impl Default for LoadConfig {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
        }
    }
}

/// Reads a `.pth`/`.pt`/`.bin` file written by `torch.save` (zip or legacy format).
/// The archive's structure is memory-mapped; each storage is read once, straight into its
/// tensor, so resident memory grows by the tensors alone.
pub fn load(path: impl AsRef<Path>, config: &LoadConfig) -> Result<Value> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|e| crate::files::read_error(path, e))?;
    // SAFETY: the map is read-only and dropped before this function returns; a file truncated
    // underneath us by another process is the documented hazard of mmap, as with torch.load(mmap=True).
    let map =
        unsafe { memmap2::Mmap::map(&file) }.map_err(|e| crate::files::read_error(path, e))?;
    load_from(&map, Some(&file), config).map_err(|e| match e {
        Error::NotACheckpoint {
            path: None,
            message,
        } => Error::NotACheckpoint {
            path: Some(path.to_path_buf()),
            message,
        },
        other => other,
    })
}

/// [`load`] from bytes in memory.
pub fn load_bytes(data: &[u8], config: &LoadConfig) -> Result<Value> {
    load_from(data, None, config)
}

/// `data` is the whole file; storages of a zip archive are read from `file` when given.
fn load_from(data: &[u8], file: Option<&std::fs::File>, config: &LoadConfig) -> Result<Value> {
    if data.starts_with(b"PK\x03\x04") {
        return load_zip(data, file, config);
    }
    if legacy::is_legacy(data) {
        return legacy::load(data, &config.device);
    }
    if data.starts_with(&[0x80]) {
        return Err(Error::not_a_checkpoint(
            "a bare pickle without PyTorch's magic number (pickle.dump, not torch.save)",
        ));
    }
    Err(Error::not_a_checkpoint(
        "neither a zip archive nor a legacy torch.save stream",
    ))
}

/// Storages of a zip archive, read on first use.
struct ZipStorages<'a> {
    data: &'a [u8],
    file: Option<&'a std::fs::File>,
    zip: &'a ZipArchive,
    prefix: String,
    big_endian: bool,
    device: Device,
    cache: HashMap<(String, &'static str), Value>,
}

/// A storage whose type flambeau does not know: the tensors over it stay inert objects, so one
/// exotic tensor does not make the whole file unreadable.
fn unknown_storage(class: &str, key: &str) -> Value {
    Value::Object(flambeau_core::Object {
        class: class.to_string(),
        args: vec![Value::Str(key.to_string())],
        state: None,
    })
}

impl ZipStorages<'_> {
    fn storage(&mut self, key: &str, st: &'static storage::StorageType) -> Result<Value> {
        if let Some(t) = self.cache.get(&(key.to_string(), st.dtype)) {
            return Ok(t.clone());
        }
        let name = format!("{}data/{key}", self.prefix);
        let entry = self
            .zip
            .find(&name)
            .ok_or_else(|| Error::MissingRecord(name.clone()))?;
        let t = match self.file {
            Some(f) if entry.is_stored() => {
                storage::tensor_from_file(f, entry.start as u64, entry.len, st, self.big_endian)?
            }
            _ => storage::value_from_bytes(&self.zip.read(self.data, entry)?, st, self.big_endian)?,
        };
        let t = storage::to_device(t, &self.device)?;
        self.cache.insert((key.to_string(), st.dtype), t.clone());
        Ok(t)
    }
}

impl Resolver for ZipStorages<'_> {
    fn persistent(&mut self, pid: &Value) -> Result<Option<Value>> {
        let bad = |m: &str| Error::Pickle {
            offset: 0,
            message: format!("persistent id {m}"),
        };
        let items = pid.as_seq().ok_or_else(|| bad("is not a tuple"))?;
        if items.first().and_then(Value::as_str) != Some("storage") || items.len() < 3 {
            return Err(bad("is not ('storage', type, key, location, numel)"));
        }
        let key = match &items[2] {
            Value::Str(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            _ => return Err(bad("has a non-string key")),
        };
        let class = match &items[1] {
            Value::Object(o) => o.class.clone(),
            Value::Dtype(d) => format!("dtype:{d}"),
            other => return Err(bad(&format!("has a storage type of {}", other.type_name()))),
        };
        if class == UNTYPED || class == "torch.storage.UntypedStorage" {
            return Ok(Some(Value::Object(flambeau_core::Object {
                class: UNTYPED.into(),
                args: vec![Value::Str(key)],
                state: None,
            })));
        }
        let short = class.strip_prefix("torch.").unwrap_or(&class);
        match storage::by_class(short) {
            Some(st) => Ok(Some(self.storage(&key, st)?)),
            None => Ok(Some(unknown_storage(&class, &key))),
        }
    }

    fn typed(&mut self, key: &str, dtype: &str) -> Result<Option<Value>> {
        match storage::by_dtype(dtype) {
            Some(st) => Ok(Some(self.storage(key, st)?)),
            None => Ok(Some(unknown_storage(&format!("torch.{dtype}"), key))),
        }
    }
}

fn load_zip(data: &[u8], file: Option<&std::fs::File>, config: &LoadConfig) -> Result<Value> {
    let zip = ZipArchive::new(data)?;
    let first = zip
        .entries()
        .first()
        .ok_or_else(|| Error::not_a_checkpoint("an empty zip archive"))?;
    // Readers take the first record's folder, whatever it is called.
    let prefix = match first.name.find('/') {
        Some(i) => first.name[..=i].to_string(),
        None => String::new(),
    };
    let torchscript = torchscript::is_torchscript(&zip, &prefix);
    let pkl = zip.find(&format!("{prefix}data.pkl")).ok_or_else(|| {
        if torchscript {
            Error::TorchScript(format!("the archive has no {prefix}data.pkl"))
        } else {
            Error::not_a_checkpoint(format!("a zip archive without {prefix}data.pkl"))
        }
    })?;
    let big_endian = match zip.find(&format!("{prefix}byteorder")) {
        Some(e) => &*zip.read(data, e)? == b"big",
        None => false,
    };
    let pickle = zip.read(data, pkl)?;
    let pickle = &pickle[..];
    let mut storages = ZipStorages {
        data,
        file,
        zip: &zip,
        prefix: prefix.clone(),
        big_endian,
        device: config.device.clone(),
        cache: HashMap::new(),
    };
    if let Some(file) = file {
        prefetch(pickle, file, &mut storages)?;
    }
    let mut vm = Vm::new(pickle, &mut storages);
    let value = vm.run()?;
    if torchscript {
        // What `torch.jit.load(f).state_dict()` returns: the weights, not the code.
        return Ok(torchscript::state_dict(&zip, data, &prefix, &value)?.to_value());
    }
    Ok(value)
}

/// True when `data` is a TorchScript archive (`torch.jit.save`), which [`load`] reads as the
/// state dict `torch.jit.load(f).state_dict()` returns.
pub fn is_torchscript(data: &[u8]) -> bool {
    data.starts_with(b"PK\x03\x04")
        && ZipArchive::new(data).is_ok_and(|zip| {
            let prefix = zip
                .entries()
                .first()
                .and_then(|e| e.name.find('/').map(|i| e.name[..=i].to_string()))
                .unwrap_or_default();
            torchscript::is_torchscript(&zip, &prefix)
        })
}

/// Records the storages a pickle names, without reading them (a dry run of the VM).
#[derive(Default)]
struct Scan {
    typed: Vec<(String, &'static storage::StorageType)>,
}

impl Resolver for Scan {
    fn persistent(&mut self, pid: &Value) -> Result<Option<Value>> {
        let items = pid.as_seq().unwrap_or(&[]);
        let key = match items.get(2) {
            Some(Value::Str(s)) => s.clone(),
            Some(Value::Int(i)) => i.to_string(),
            _ => return Ok(None),
        };
        if let Some(Value::Object(o)) = items.get(1) {
            if let Some(st) = storage::by_class(o.class.strip_prefix("torch.").unwrap_or(&o.class))
                .filter(|st| st.candle.is_some())
            {
                self.typed.push((key, st));
            }
        }
        Ok(None)
    }
    fn typed(&mut self, _key: &str, _dtype: &str) -> Result<Option<Value>> {
        Ok(None)
    }
}

/// Reads every typed storage of the archive in parallel before the pickle runs: the dry run
/// learns their dtypes, the reads fill the cache the real run takes them from.
fn prefetch(pickle: &[u8], file: &std::fs::File, storages: &mut ZipStorages<'_>) -> Result<()> {
    use rayon::prelude::*;
    let mut scan = Scan::default();
    // A pickle the dry run cannot follow is reported by the real run, with its context.
    if Vm::new(pickle, &mut scan).run().is_err() {
        return Ok(());
    }
    scan.typed.sort_by(|a, b| a.0.cmp(&b.0));
    scan.typed.dedup_by(|a, b| a.0 == b.0);
    let jobs: Vec<(String, &'static storage::StorageType, usize, usize)> = scan
        .typed
        .into_iter()
        .filter_map(|(key, st)| {
            let e = storages
                .zip
                .find(&format!("{}data/{key}", storages.prefix))
                .filter(|e| e.is_stored())?;
            Some((key, st, e.start, e.len))
        })
        .collect();
    let big_endian = storages.big_endian;
    let tensors: Vec<(String, &'static str, Value)> = jobs
        .into_par_iter()
        .map(|(key, st, start, len)| {
            let t = storage::tensor_from_file(file, start as u64, len, st, big_endian)?;
            Ok((key, st.dtype, t))
        })
        .collect::<Result<_>>()?;
    for (key, dtype, t) in tensors {
        let t = storage::to_device(t, &storages.device)?;
        storages.cache.insert((key, dtype), t);
    }
    Ok(())
}

/// Opens any file flambeau reads (see [`open`](crate::open)) and finds the model's state dict
/// in it (see [`find_state_dict`](crate::find_state_dict)).
pub fn load_state_dict_file(path: impl AsRef<Path>, config: &LoadConfig) -> Result<StateDict> {
    let value = crate::open(path, config)?;
    Ok(crate::find_state_dict(&value)?.state_dict)
}
