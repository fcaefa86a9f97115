//! Storage types: PyTorch's storage classes and dtypes ↔ candle dtypes, raw bytes → tensors,
//! and views (offset, size, stride) over a storage.

use std::fs::File;
use std::os::unix::fs::FileExt;

use candle_core::{DType, Device, Tensor, WithDType};

use crate::{Error, Result};

/// How the bytes of a PyTorch storage become a candle tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Widen {
    /// Same representation.
    None,
    /// `int8` → `i16` (candle has no i8).
    I8ToI16,
    /// `bool` (1 byte) → `u8`.
    BoolToU8,
    /// `uint16` → `u32`.
    U16ToU32,
}

/// One PyTorch element type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageType {
    /// The legacy typed-storage class (`FloatStorage`).
    pub class: &'static str,
    /// The `torch.dtype` name (`float32`).
    pub dtype: &'static str,
    /// Bytes per element in the file.
    pub size: usize,
    /// The candle dtype it is read into.
    pub candle: DType,
    /// The conversion on the way in.
    pub widen: Widen,
}

const TYPES: &[StorageType] = &[
    StorageType {
        class: "DoubleStorage",
        dtype: "float64",
        size: 8,
        candle: DType::F64,
        widen: Widen::None,
    },
    StorageType {
        class: "FloatStorage",
        dtype: "float32",
        size: 4,
        candle: DType::F32,
        widen: Widen::None,
    },
    StorageType {
        class: "HalfStorage",
        dtype: "float16",
        size: 2,
        candle: DType::F16,
        widen: Widen::None,
    },
    StorageType {
        class: "BFloat16Storage",
        dtype: "bfloat16",
        size: 2,
        candle: DType::BF16,
        widen: Widen::None,
    },
    StorageType {
        class: "LongStorage",
        dtype: "int64",
        size: 8,
        candle: DType::I64,
        widen: Widen::None,
    },
    StorageType {
        class: "IntStorage",
        dtype: "int32",
        size: 4,
        candle: DType::I32,
        widen: Widen::None,
    },
    StorageType {
        class: "ShortStorage",
        dtype: "int16",
        size: 2,
        candle: DType::I16,
        widen: Widen::None,
    },
    StorageType {
        class: "CharStorage",
        dtype: "int8",
        size: 1,
        candle: DType::I16,
        widen: Widen::I8ToI16,
    },
    StorageType {
        class: "ByteStorage",
        dtype: "uint8",
        size: 1,
        candle: DType::U8,
        widen: Widen::None,
    },
    StorageType {
        class: "BoolStorage",
        dtype: "bool",
        size: 1,
        candle: DType::U8,
        widen: Widen::BoolToU8,
    },
    StorageType {
        class: "UInt16Storage",
        dtype: "uint16",
        size: 2,
        candle: DType::U32,
        widen: Widen::U16ToU32,
    },
    StorageType {
        class: "UInt32Storage",
        dtype: "uint32",
        size: 4,
        candle: DType::U32,
        widen: Widen::None,
    },
    StorageType {
        class: "Float8_e4m3fnStorage",
        dtype: "float8_e4m3fn",
        size: 1,
        candle: DType::F8E4M3,
        widen: Widen::None,
    },
];

/// The storage type of a legacy typed-storage class name (`FloatStorage`).
pub fn by_class(class: &str) -> Option<&'static StorageType> {
    TYPES.iter().find(|t| t.class == class)
}

/// The storage type of a `torch.dtype` name (`float32`).
pub fn by_dtype(dtype: &str) -> Option<&'static StorageType> {
    TYPES.iter().find(|t| t.dtype == dtype)
}

/// What a candle dtype is written as: (storage type, whether values must be converted first).
pub fn for_writing(dtype: DType) -> Result<&'static StorageType> {
    let class = match dtype {
        DType::F64 => "DoubleStorage",
        DType::F32 => "FloatStorage",
        DType::F16 => "HalfStorage",
        DType::BF16 => "BFloat16Storage",
        DType::I64 | DType::U32 => "LongStorage",
        DType::I32 => "IntStorage",
        DType::I16 => "ShortStorage",
        DType::U8 => "ByteStorage",
        other => return Err(Error::Unwritable(format!("tensors of dtype {other:?}"))),
    };
    Ok(by_class(class).expect("listed above"))
}

/// A 1-D CPU tensor from the raw little- (or big-) endian bytes of a storage.
pub fn tensor_from_bytes(bytes: &[u8], st: &StorageType, big_endian: bool) -> Result<Tensor> {
    let n = bytes.len() / st.size;
    let swapped;
    let bytes = if big_endian && st.size > 1 {
        let mut b = bytes.to_vec();
        for chunk in b.chunks_mut(st.size) {
            chunk.reverse();
        }
        swapped = b;
        &swapped[..]
    } else {
        bytes
    };
    let cpu = &Device::Cpu;
    Ok(match st.widen {
        Widen::None => Tensor::from_raw_buffer(bytes, st.candle, &[n], cpu)?,
        Widen::I8ToI16 => Tensor::from_vec(
            bytes.iter().map(|&b| b as i8 as i16).collect::<Vec<_>>(),
            n,
            cpu,
        )?,
        Widen::BoolToU8 => Tensor::from_vec(
            bytes.iter().map(|&b| (b != 0) as u8).collect::<Vec<_>>(),
            n,
            cpu,
        )?,
        Widen::U16ToU32 => Tensor::from_vec(
            bytes
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]) as u32)
                .collect::<Vec<_>>(),
            n,
            cpu,
        )?,
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
) -> Result<Tensor> {
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
    if st.widen != Widen::None || big_endian {
        let mut bytes = vec![0u8; len];
        file.read_exact_at(&mut bytes, offset)
            .map_err(|e| Error::io("<storage record>", e))?;
        return tensor_from_bytes(&bytes, st, big_endian);
    }
    match st.candle {
        DType::F32 => read::<f32>(file, offset, len),
        DType::F64 => read::<f64>(file, offset, len),
        DType::F16 => read::<half::f16>(file, offset, len),
        DType::BF16 => read::<half::bf16>(file, offset, len),
        DType::I64 => read::<i64>(file, offset, len),
        DType::I32 => read::<i32>(file, offset, len),
        DType::I16 => read::<i16>(file, offset, len),
        DType::U32 => read::<u32>(file, offset, len),
        DType::U8 => read::<u8>(file, offset, len),
        _ => {
            let mut bytes = vec![0u8; len];
            file.read_exact_at(&mut bytes, offset)
                .map_err(|e| Error::io("<storage record>", e))?;
            tensor_from_bytes(&bytes, st, big_endian)
        }
    }
}

/// The largest number of elements a view may have per element of its storage: stride-0
/// (expanded) views are legal, but a hostile file must not make us allocate without bound.
const MAX_EXPANSION: usize = 1024;

/// `storage.as_strided(size, stride, offset)`: a view (sharing the storage) when contiguous,
/// otherwise a copy with the right values.
pub fn view(
    base: &Tensor,
    key: &str,
    offset: usize,
    size: &[usize],
    stride: &[usize],
) -> Result<Tensor> {
    if size.len() != stride.len() {
        return Err(Error::Pickle {
            offset: 0,
            message: format!("tensor of storage `{key}` has size {size:?} but stride {stride:?}"),
        });
    }
    let available = base.dim(0)?;
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
