//! `save`: a [`Value`] into the zip format that `torch.load(path)` opens with its defaults,
//! written atomically (temporary file, fsync, rename).

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::Path;

use candle_core::{CpuStorage, Device, Storage, Tensor};
use flambeau_core::{RawStorage, StateDict, Value};

use crate::archive::zip_writer::ZipWriter;
use crate::pickle::writer::{dump, StorageSink, TensorRef};
use crate::{files, storage, Error, Result};

/// Collects storages; tensors that share a candle storage share a record, as in torch.save.
#[derive(Default)]
struct Storages {
    /// Storage identity → record key.
    by_storage: HashMap<usize, String>,
    /// Record key → a tensor over the whole storage (to write it later, without a copy).
    tensors: Vec<(String, Tensor)>,
    /// Raw storages (dtypes candle lacks): record key → the bytes, written as they were read.
    raw: Vec<(String, RawStorage)>,
}

fn storage_id(t: &Tensor) -> usize {
    let (s, _) = t.storage_and_layout();
    &*s as *const Storage as usize
}

impl StorageSink for Storages {
    fn register_raw(&mut self, storage: &RawStorage) -> String {
        if let Some((k, _)) = self.raw.iter().find(|(_, s)| s.same(storage)) {
            return k.clone();
        }
        let k = (self.tensors.len() + self.raw.len()).to_string();
        self.raw.push((k.clone(), storage.clone()));
        k
    }

    fn register(&mut self, t: &Tensor) -> Result<TensorRef> {
        let mut t = t.clone();
        if !matches!(t.device(), Device::Cpu) {
            t = t.to_device(&Device::Cpu)?;
        }
        let st = storage::for_writing(t.dtype())?;
        let id = storage_id(&t);
        let key = match self.by_storage.get(&id) {
            Some(k) => k.clone(),
            None => {
                let k = (self.tensors.len() + self.raw.len()).to_string();
                self.by_storage.insert(id, k.clone());
                self.tensors.push((k.clone(), t.clone()));
                k
            }
        };
        let (s, layout) = t.storage_and_layout();
        let storage_numel = match &*s {
            Storage::Cpu(c) => cpu_len(c),
            _ => unreachable!("moved to the CPU above"),
        };
        Ok(TensorRef {
            key,
            class: st.class,
            dtype: st.dtype,
            element_size: st.size,
            storage_numel,
            offset: layout.start_offset(),
            size: layout.dims().to_vec(),
            stride: layout.stride().to_vec(),
        })
    }
}

fn cpu_len(c: &CpuStorage) -> usize {
    match c {
        CpuStorage::U8(v) => v.len(),
        CpuStorage::U32(v) => v.len(),
        CpuStorage::I16(v) => v.len(),
        CpuStorage::I32(v) => v.len(),
        CpuStorage::I64(v) => v.len(),
        CpuStorage::BF16(v) => v.len(),
        CpuStorage::F16(v) => v.len(),
        CpuStorage::F32(v) => v.len(),
        CpuStorage::F64(v) => v.len(),
        CpuStorage::F8E4M3(v) => v.len(),
        CpuStorage::F6E2M3(v)
        | CpuStorage::F6E3M2(v)
        | CpuStorage::F4(v)
        | CpuStorage::F8E8M0(v) => v.len(),
    }
}

/// The raw little-endian bytes of a whole storage, borrowed.
fn bytes_of(c: &CpuStorage) -> &[u8] {
    fn raw<T>(v: &[T]) -> &[u8] {
        // SAFETY: plain-old-data numbers, read as bytes for as long as `v` is borrowed.
        unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
    }
    match c {
        CpuStorage::U8(v) => v,
        CpuStorage::U32(v) => raw(v),
        CpuStorage::I16(v) => raw(v),
        CpuStorage::I32(v) => raw(v),
        CpuStorage::I64(v) => raw(v),
        CpuStorage::BF16(v) => raw(v),
        CpuStorage::F16(v) => raw(v),
        CpuStorage::F32(v) => raw(v),
        CpuStorage::F64(v) => raw(v),
        CpuStorage::F8E4M3(v) => raw(v),
        CpuStorage::F6E2M3(v)
        | CpuStorage::F6E3M2(v)
        | CpuStorage::F4(v)
        | CpuStorage::F8E8M0(v) => v,
    }
}

#[cfg(target_endian = "big")]
compile_error!("flambeau-serialize writes storages as little-endian bytes straight from memory");

fn write_archive<W: Write>(value: &Value, prefix: &str, out: W) -> Result<W> {
    let mut storages = Storages::default();
    let pickle = dump(value, &mut storages)?;
    let mut zip = ZipWriter::new(out);
    zip.add(&format!("{prefix}/data.pkl"), &pickle)?;
    zip.add(&format!("{prefix}/byteorder"), b"little")?;
    for (key, t) in &storages.tensors {
        let (s, _) = t.storage_and_layout();
        let Storage::Cpu(c) = &*s else {
            unreachable!("moved to the CPU when registered")
        };
        zip.add(&format!("{prefix}/data/{key}"), bytes_of(c))?;
    }
    for (key, s) in &storages.raw {
        zip.add(&format!("{prefix}/data/{key}"), &s.bytes)?;
    }
    zip.add(&format!("{prefix}/version"), b"3\n")?;
    zip.finish()
}

/// The bytes `save` would write (archive folder `archive`).
pub fn to_bytes(value: &Value) -> Result<Vec<u8>> {
    write_archive(value, "archive", Vec::new())
}

/// Streams the archive into any writer (a socket, a buffer), without the atomic-rename
/// and fsync of [`save`].
pub fn write_to<W: Write>(value: &Value, out: W) -> Result<W> {
    write_archive(value, "archive", out)
}

/// The archive folder PyTorch would use: the file name without its last extension.
fn archive_name(path: &Path) -> String {
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("archive");
    let clean: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() {
        "archive".into()
    } else {
        clean
    }
}

/// Writes `value` to `path` atomically: a temporary file in the same directory is written,
/// flushed to disk, then renamed over `path`. A crash at any moment leaves either the old file
/// or the new one. An existing `path` must be a regular file (a directory, device node, FIFO or
/// socket is refused, never replaced); a symlink is written through to its target. Errors name
/// `path`, not the temporary file.
pub fn save(value: &Value, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    files::write_atomically(path, |tmp| {
        let file = std::fs::File::create(tmp).map_err(|e| Error::io(tmp, e))?;
        let mut w = write_archive(
            value,
            &archive_name(path),
            BufWriter::with_capacity(1 << 20, file),
        )?;
        w.flush().map_err(|e| Error::io(tmp, e))?;
        w.into_inner().map_err(|e| Error::io(tmp, e.into_error()))?;
        Ok(())
    })
}

/// `torch.save(model.state_dict(), path)`.
pub fn save_state_dict(sd: &StateDict, path: impl AsRef<Path>) -> Result<()> {
    save(&sd.to_value(), path)
}
