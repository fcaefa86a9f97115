//! `.safetensors` ↔ [`StateDict`], through the `safetensors` crate (memory-mapped on read).

use std::path::Path;

use candle_core::{Device, Tensor};
use flambeau_core::StateDict;
use safetensors::SafeTensors;

use crate::{files, Error, Result};

fn dtype(d: safetensors::Dtype) -> Result<candle_core::DType> {
    use candle_core::DType as D;
    use safetensors::Dtype as S;
    Ok(match d {
        S::U8 | S::BOOL => D::U8,
        S::U32 => D::U32,
        S::I16 => D::I16,
        S::I32 => D::I32,
        S::I64 => D::I64,
        S::F16 => D::F16,
        S::BF16 => D::BF16,
        S::F32 => D::F32,
        S::F64 => D::F64,
        other => return Err(Error::UnsupportedDtype(format!("safetensors {other:?}"))),
    })
}

/// Reads every tensor, in the order of the file's data, onto `device`.
pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<StateDict> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|e| files::read_error(path, e))?;
    // SAFETY: read-only map, dropped before returning.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| files::read_error(path, e))?;
    let st = SafeTensors::deserialize(&map)
        .map_err(|e| Error::Safetensors(format!("{}: {e}", path.display())))?;
    let base = map.as_ptr() as usize;
    let mut views: Vec<_> = st.tensors();
    views.sort_by_key(|(_, v)| v.data().as_ptr() as usize - base);
    let mut sd = StateDict::new();
    for (name, view) in views {
        let t = Tensor::from_raw_buffer(
            view.data(),
            dtype(view.dtype())?,
            view.shape(),
            &Device::Cpu,
        )?;
        sd.insert(name, t.to_device(device)?);
    }
    Ok(sd)
}

/// Writes the state dict atomically (temporary file, fsync, rename), with the same rules for
/// the output path as [`save`](crate::save): regular files only, symlinks written through.
pub fn save(sd: &StateDict, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let tensors: Vec<(String, Tensor)> = sd
        .iter()
        .map(|(k, t)| Ok((k.to_string(), t.to_device(&Device::Cpu)?.contiguous()?)))
        .collect::<Result<_>>()?;
    files::write_atomically(path, |tmp| {
        safetensors::serialize_to_file(tensors.iter().map(|(k, t)| (k.as_str(), t)), None, tmp)
            .map_err(|e| match e {
                safetensors::SafeTensorError::IoError(io) => Error::io(tmp, io),
                other => Error::Safetensors(other.to_string()),
            })
    })
}
