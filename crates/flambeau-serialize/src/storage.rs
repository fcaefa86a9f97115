//! Storage types: PyTorch's storage classes and dtypes ↔ candle dtypes, raw bytes → tensors
//! (or raw tensors, for the dtypes candle lacks), and views (offset, size, stride) over a storage.

use std::fs::File;
use std::os::unix::fs::FileExt;

use candle_core::{DType, Device, Tensor, WithDType};
use flambeau_core::{RawData, RawStorage, RawStrided, RawTensor, Value};

use crate::{Error, Result};

/// One PyTorch element type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageType {
    /// The legacy typed-storage class (`FloatStorage`), for the dtypes that have one.
    pub class: Option<&'static str>,
    /// The `torch.dtype` name (`float32`).
    pub dtype: &'static str,
    /// Bytes per element in the file.
    pub size: usize,
    /// The candle dtype that holds it exactly; `None` when only a [`RawTensor`] can.
    pub candle: Option<DType>,
}

const fn t(
    class: Option<&'static str>,
    dtype: &'static str,
    size: usize,
    candle: Option<DType>,
) -> StorageType {
    StorageType {
        class,
        dtype,
        size,
        candle,
    }
}

/// Every dtype `torch.load` reads by default.
const TYPES: &[StorageType] = &[
    t(Some("DoubleStorage"), "float64", 8, Some(DType::F64)),
    t(Some("FloatStorage"), "float32", 4, Some(DType::F32)),
    t(Some("HalfStorage"), "float16", 2, Some(DType::F16)),
    t(Some("BFloat16Storage"), "bfloat16", 2, Some(DType::BF16)),
    t(Some("LongStorage"), "int64", 8, Some(DType::I64)),
    t(Some("IntStorage"), "int32", 4, Some(DType::I32)),
    t(Some("ShortStorage"), "int16", 2, Some(DType::I16)),
    t(Some("ByteStorage"), "uint8", 1, Some(DType::U8)),
    t(None, "uint32", 4, Some(DType::U32)),
    t(None, "float8_e4m3fn", 1, Some(DType::F8E4M3)),
    t(Some("CharStorage"), "int8", 1, None),
    t(Some("BoolStorage"), "bool", 1, None),
    t(None, "uint16", 2, None),
    t(None, "uint64", 8, None),
    t(Some("ComplexHalfStorage"), "complex32", 4, None),
    t(Some("ComplexFloatStorage"), "complex64", 8, None),
    t(Some("ComplexDoubleStorage"), "complex128", 16, None),
    t(None, "float8_e5m2", 1, None),
    t(None, "float8_e4m3fnuz", 1, None),
    t(None, "float8_e5m2fnuz", 1, None),
    t(None, "float8_e8m0fnu", 1, None),
    t(Some("QUInt8Storage"), "quint8", 1, None),
    t(Some("QInt8Storage"), "qint8", 1, None),
    t(Some("QInt32Storage"), "qint32", 4, None),
    t(Some("QUInt4x2Storage"), "quint4x2", 1, None),
    t(Some("QUInt2x4Storage"), "quint2x4", 1, None),
];

/// The storage type of a legacy typed-storage class name (`FloatStorage`).
pub fn by_class(class: &str) -> Option<&'static StorageType> {
    TYPES.iter().find(|t| t.class == Some(class))
}

/// The storage type of a `torch.dtype` name (`float32`; `float`, `long`, … aliases too).
pub fn by_dtype(dtype: &str) -> Option<&'static StorageType> {
    let dtype = match dtype {
        "double" => "float64",
        "float" => "float32",
        "half" => "float16",
        "long" => "int64",
        "int" => "int32",
        "short" => "int16",
        other => other,
    };
    TYPES.iter().find(|t| t.dtype == dtype)
}

/// How a candle tensor of `dtype` is written: PyTorch's dtype of the same representation.
pub fn for_writing(dtype: DType) -> Result<&'static StorageType> {
    TYPES
        .iter()
        .find(|t| t.candle == Some(dtype))
        .ok_or_else(|| {
            Error::Unwritable(format!(
                "tensors of dtype {dtype:?} (PyTorch has no such dtype)"
            ))
        })
}

/// Reverses the bytes of each scalar of a big-endian storage (both halves of a complex).
fn swap_to_little_endian(bytes: &mut [u8], st: &StorageType) {
    let unit = if st.dtype.starts_with("complex") {
        st.size / 2
    } else {
        st.size
    };
    if unit > 1 {
        for chunk in bytes.chunks_mut(unit) {
            chunk.reverse();
        }
    }
}

/// A whole storage as a value: a 1-D candle tensor, or a 1-D [`RawTensor`] over its bytes
/// when candle has no exact dtype for it.
pub fn storage_value(mut bytes: Vec<u8>, st: &StorageType, big_endian: bool) -> Result<Value> {
    if big_endian {
        swap_to_little_endian(&mut bytes, st);
    }
    let n = bytes.len() / st.size;
    bytes.truncate(n * st.size);
    Ok(match st.candle {
        Some(dtype) => Value::Tensor(Tensor::from_raw_buffer(&bytes, dtype, &[n], &Device::Cpu)?),
        None => Value::RawTensor(RawTensor {
            dtype: st.dtype.to_string(),
            size: vec![n],
            data: RawData::Strided(RawStrided {
                storage: RawStorage::new(bytes),
                offset: 0,
                stride: vec![1],
            }),
        }),
    })
}

/// A storage from bytes in memory (see [`storage_value`]).
pub fn value_from_bytes(bytes: &[u8], st: &StorageType, big_endian: bool) -> Result<Value> {
    storage_value(bytes.to_vec(), st, big_endian)
}

/// Moves a storage value to `device` (raw storages stay in memory, and so do storages of a
/// dtype `device` cannot hold: i16/i32 on CUDA, see [`flambeau_core::device_dtypes`]).
pub fn to_device(v: Value, device: &Device) -> Result<Value> {
    Ok(match v {
        Value::Tensor(t) => Value::Tensor(flambeau_core::device_dtypes::load_to(&t, device)?),
        other => other,
    })
}

/// Reads a storage of `len` bytes at `offset` of `file` straight into the new tensor's buffer:
/// one copy out of the page cache, and none of the file mapped into this process (so resident
/// memory grows by the tensors alone).
pub fn tensor_from_file(
    file: &File,
    offset: u64,
    len: usize,
    st: &StorageType,
    big_endian: bool,
) -> Result<Value> {
    fn read<T: WithDType>(file: &File, offset: u64, len: usize) -> Result<Tensor> {
        let n = len / std::mem::size_of::<T>();
        let bytes = n * std::mem::size_of::<T>();
        // Uninitialised: zero-filling first would be a second pass over the whole storage.
        let mut v: Vec<T> = Vec::with_capacity(n);
        // SAFETY: `bytes` bytes of capacity viewed as a byte buffer for `read_exact_at`, which
        // writes every one of them before `set_len`; on error the Vec is dropped with length 0.
        let buf = unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, bytes) };
        file.read_exact_at(buf, offset)
            .map_err(|e| Error::io("<storage record>", e))?;
        // SAFETY: all `n` elements were just written, and every bit pattern is a valid number.
        unsafe { v.set_len(n) };
        Ok(Tensor::from_vec(v, n, &Device::Cpu)?)
    }
    let read_bytes = || -> Result<Vec<u8>> {
        let mut bytes = vec![0u8; len];
        file.read_exact_at(&mut bytes, offset)
            .map_err(|e| Error::io("<storage record>", e))?;
        Ok(bytes)
    };
    let Some(candle) = st.candle.filter(|_| !big_endian) else {
        return storage_value(read_bytes()?, st, big_endian);
    };
    let t = match candle {
        DType::F32 => read::<f32>(file, offset, len),
        DType::F64 => read::<f64>(file, offset, len),
        DType::F16 => read::<half::f16>(file, offset, len),
        DType::BF16 => read::<half::bf16>(file, offset, len),
        DType::I64 => read::<i64>(file, offset, len),
        DType::I32 => read::<i32>(file, offset, len),
        DType::I16 => read::<i16>(file, offset, len),
        DType::U32 => read::<u32>(file, offset, len),
        DType::U8 => read::<u8>(file, offset, len),
        _ => return storage_value(read_bytes()?, st, big_endian),
    }?;
    Ok(Value::Tensor(t))
}

/// The largest number of elements a view may have per element of its storage: stride-0
/// (expanded) views are legal, but a hostile file must not make us allocate without bound.
const MAX_EXPANSION: usize = 1024;

/// Checks that `storage.as_strided(size, stride, offset)` stays inside a storage of
/// `available` elements and does not expand absurdly; returns the view's element count.
fn check_view(
    available: usize,
    key: &str,
    offset: usize,
    size: &[usize],
    stride: &[usize],
) -> Result<usize> {
    if size.len() != stride.len() {
        return Err(Error::Pickle {
            offset: 0,
            message: format!("tensor of storage `{key}` has size {size:?} but stride {stride:?}"),
        });
    }
    let too_big = || Error::StorageTooSmall {
        key: key.to_string(),
        needed: usize::MAX,
        available,
    };
    let numel = size
        .iter()
        .try_fold(1usize, |a, &s| a.checked_mul(s))
        .ok_or_else(too_big)?;
    let needed = if numel == 0 {
        offset
    } else {
        size.iter()
            .zip(stride)
            .try_fold(offset + 1, |a, (&s, &st)| {
                (s - 1).checked_mul(st).and_then(|x| x.checked_add(a))
            })
            .ok_or_else(too_big)?
    };
    if needed > available {
        return Err(Error::StorageTooSmall {
            key: key.to_string(),
            needed,
            available,
        });
    }
    if numel > available.max(1).saturating_mul(MAX_EXPANSION) {
        return Err(Error::Pickle {
            offset: 0,
            message: format!("tensor of {numel} elements over storage `{key}` of {available}: refusing an absurd expansion"),
        });
    }
    Ok(numel)
}

/// `storage.as_strided(size, stride, offset)` over a raw storage (a 1-D [`RawTensor`] over a
/// whole storage): the view shares the bytes and keeps its strides, to be written back as is.
pub fn raw_view(
    base: &RawTensor,
    key: &str,
    offset: usize,
    size: &[usize],
    stride: &[usize],
) -> Result<RawTensor> {
    let RawData::Strided(s) = &base.data else {
        return Err(Error::Pickle {
            offset: 0,
            message: format!("storage `{key}` is not a plain storage"),
        });
    };
    let esize = flambeau_core::raw_tensor::raw_element_size(&base.dtype).unwrap_or(1);
    check_view(s.storage.bytes.len() / esize, key, offset, size, stride)?;
    Ok(RawTensor {
        dtype: base.dtype.clone(),
        size: size.to_vec(),
        data: RawData::Strided(RawStrided {
            storage: s.storage.clone(),
            offset,
            stride: stride.to_vec(),
        }),
    })
}

/// `storage.as_strided(size, stride, offset)`: a view (sharing the storage) when contiguous,
/// otherwise a copy with the right values.
pub fn view(
    base: &Tensor,
    key: &str,
    offset: usize,
    size: &[usize],
    stride: &[usize],
) -> Result<Tensor> {
    let available = base.dim(0)?;
    let numel = check_view(available, key, offset, size, stride)?;
    let contiguous = {
        let mut expect = 1;
        let mut ok = true;
        for (&s, &st) in size.iter().zip(stride).rev() {
            if s != 1 && st != expect {
                ok = false;
            }
            expect *= s;
        }
        ok
    };
    if contiguous {
        return Ok(base
            .narrow(0, offset.min(available), numel)?
            .reshape(size)?);
    }
    // Gather the elements of a strided view.
    let mut idx = Vec::with_capacity(numel);
    let mut pos = vec![0usize; size.len()];
    for _ in 0..numel {
        idx.push((offset + pos.iter().zip(stride).map(|(p, s)| p * s).sum::<usize>()) as u32);
        for d in (0..size.len()).rev() {
            pos[d] += 1;
            if pos[d] < size[d] {
                break;
            }
            pos[d] = 0;
        }
    }
    let idx = Tensor::from_vec(idx, numel, base.device())?;
    Ok(base.index_select(&idx, 0)?.reshape(size)?)
}
