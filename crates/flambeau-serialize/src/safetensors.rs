//! `.safetensors` ↔ [`StateDict`], through the `safetensors` crate (memory-mapped on read).
//! Dtypes candle lacks (I8, BOOL, U16, U64, F8_E5M2, C64) read as [`RawTensor`]s and are
//! written back with the dtype they had.

use std::borrow::Cow;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use flambeau_core::{RawData, RawStorage, RawStrided, RawTensor, StateDict};
use safetensors::{Dtype, SafeTensors};

use crate::{files, Error, Result};

/// `(safetensors dtype, PyTorch dtype, candle dtype that holds it exactly)`.
const DTYPES: &[(Dtype, &str, Option<DType>)] = &[
    (Dtype::F64, "float64", Some(DType::F64)),
    (Dtype::F32, "float32", Some(DType::F32)),
    (Dtype::F16, "float16", Some(DType::F16)),
    (Dtype::BF16, "bfloat16", Some(DType::BF16)),
    (Dtype::I64, "int64", Some(DType::I64)),
    (Dtype::I32, "int32", Some(DType::I32)),
    (Dtype::I16, "int16", Some(DType::I16)),
    (Dtype::U8, "uint8", Some(DType::U8)),
    (Dtype::U32, "uint32", Some(DType::U32)),
    (Dtype::F8_E4M3, "float8_e4m3fn", Some(DType::F8E4M3)),
    (Dtype::I8, "int8", None),
    (Dtype::BOOL, "bool", None),
    (Dtype::U16, "uint16", None),
    (Dtype::U64, "uint64", None),
    (Dtype::F8_E5M2, "float8_e5m2", None),
    (Dtype::F8_E4M3FNUZ, "float8_e4m3fnuz", None),
    (Dtype::F8_E5M2FNUZ, "float8_e5m2fnuz", None),
    (Dtype::C64, "complex64", None),
];

/// A raw tensor as a safetensors view: its elements in row-major order.
struct RawView {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl safetensors::View for &RawView {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// A candle tensor or a raw one, written by the safetensors crate.
enum Entry {
    Tensor(Tensor),
    Raw(RawView),
}

impl safetensors::View for &Entry {
    fn dtype(&self) -> Dtype {
        match self {
            Entry::Tensor(t) => safetensors::View::dtype(t),
            Entry::Raw(r) => r.dtype,
        }
    }
    fn shape(&self) -> &[usize] {
        match self {
            Entry::Tensor(t) => t.dims(),
            Entry::Raw(r) => &r.shape,
        }
    }
    fn data(&self) -> Cow<'_, [u8]> {
        match self {
            Entry::Tensor(t) => safetensors::View::data(t),
            Entry::Raw(r) => Cow::Borrowed(&r.bytes),
        }
    }
    fn data_len(&self) -> usize {
        match self {
            Entry::Tensor(t) => safetensors::View::data_len(t),
            Entry::Raw(r) => r.bytes.len(),
        }
    }
}

fn raw_view(key: &str, r: &RawTensor) -> Result<RawView> {
    let dtype = DTYPES
        .iter()
        .find(|(_, name, candle)| *name == r.dtype && candle.is_none())
        .map(|(d, _, _)| *d)
        .filter(|_| matches!(r.data, RawData::Strided(_)));
    let (Some(dtype), Some(bytes)) = (dtype, r.contiguous_bytes()) else {
        return Err(Error::Unwritable(format!(
            "`{key}` ({} {}) to .safetensors, which has no such dtype or layout; write a .pth instead (it keeps the tensor as it is)",
            r.dtype,
            r.layout()
        )));
    };
    Ok(RawView {
        dtype,
        shape: r.size.clone(),
        bytes: bytes?,
    })
}

/// Reads every tensor, in the order of the file's data, onto `device`.
pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<StateDict> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|e| files::read_error(path, e))?;
    // SAFETY: read-only map, dropped before returning.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| files::read_error(path, e))?;
    let st = SafeTensors::deserialize(&map).map_err(|e| Error::Safetensors {
        path: Some(path.to_path_buf()),
        message: e.to_string(),
    })?;
    let base = map.as_ptr() as usize;
    let mut views: Vec<_> = st.tensors();
    views.sort_by_key(|(_, v)| v.data().as_ptr() as usize - base);
    let mut sd = StateDict::new();
    for (name, view) in views {
        let (_, torch_name, candle) = DTYPES
            .iter()
            .find(|(d, _, _)| *d == view.dtype())
            .ok_or_else(|| Error::UnsupportedSafetensorsDtype {
                path: path.to_path_buf(),
                key: name.clone(),
                dtype: format!("{:?}", view.dtype()),
            })?;
        match candle {
            Some(dtype) => {
                let t = Tensor::from_raw_buffer(view.data(), *dtype, view.shape(), &Device::Cpu)?;
                // i16/i32 stay on the host for a CUDA device (flambeau_core::device_dtypes).
                sd.insert(name, flambeau_core::device_dtypes::load_to(&t, device)?);
            }
            None => {
                let stride = contiguous_stride(view.shape());
                sd.insert_raw(
                    name,
                    RawTensor {
                        dtype: torch_name.to_string(),
                        size: view.shape().to_vec(),
                        data: RawData::Strided(RawStrided {
                            storage: RawStorage::new(view.data().to_vec()),
                            offset: 0,
                            stride,
                        }),
                    },
                );
            }
        }
    }
    Ok(sd)
}

/// Writes the state dict atomically (temporary file, fsync, rename), with the same rules for
/// the output path as [`save`](crate::save): regular files only, symlinks written through.
pub fn save(sd: &StateDict, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let tensors: Vec<(String, Entry)> = sd
        .iter_values()
        .map(|(k, v)| {
            let entry = match v {
                flambeau_core::Value::Tensor(t) => {
                    Entry::Tensor(t.to_device(&Device::Cpu)?.contiguous()?)
                }
                flambeau_core::Value::RawTensor(r) => Entry::Raw(raw_view(k, &r)?),
                _ => unreachable!("a state dict holds tensors only"),
            };
            Ok((k.to_string(), entry))
        })
        .collect::<Result<_>>()?;
    files::write_atomically(path, |tmp| {
        safetensors::serialize_to_file(tensors.iter().map(|(k, t)| (k.as_str(), t)), None, tmp)
            .map_err(|e| match e {
                safetensors::SafeTensorError::IoError(io) => Error::io(tmp, io),
                other => Error::Safetensors {
                    path: None,
                    message: other.to_string(),
                },
            })
    })
}

/// Row-major strides of `shape`, in elements.
fn contiguous_stride(shape: &[usize]) -> Vec<usize> {
    let mut stride = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        stride[d] = stride[d + 1] * shape[d + 1];
    }
    stride
}
