//! [`RawTensor`]: a tensor candle cannot hold exactly, kept as typed raw data.
//!
//! PyTorch has dtypes candle lacks (`int8`, `bool`, `uint16`, `uint64`, complex, `float8_e5m2`,
//! quantized) and layouts it lacks (sparse COO/CSR/…). Converting them would change the file a
//! user writes back, so they stay as their storage bytes plus everything needed to write them
//! again byte for byte: dtype, shape, strides, offset, the quantizer, the sparse components.
//! [`RawTensor::to_tensor`] widens the integer ones exactly when a candle tensor is needed.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use crate::value::Value;
use crate::{Error, Result};

/// The raw little-endian bytes of one whole PyTorch storage, shared by every view of it.
#[derive(Debug, Clone)]
pub struct RawStorage {
    /// The storage's bytes, exactly as in the file (little-endian).
    pub bytes: Arc<Vec<u8>>,
}

impl RawStorage {
    /// A storage over these bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self {
            bytes: Arc::new(bytes),
        }
    }

    /// True when both are the same storage (views of one tensor).
    pub fn same(&self, other: &RawStorage) -> bool {
        Arc::ptr_eq(&self.bytes, &other.bytes)
    }
}

/// A strided view over a raw storage: `storage.as_strided(size, stride, offset)`.
#[derive(Debug, Clone)]
pub struct RawStrided {
    /// The whole storage.
    pub storage: RawStorage,
    /// Offset of the first element, in elements.
    pub offset: usize,
    /// Strides, in elements.
    pub stride: Vec<usize>,
}

/// The quantizer of a quantized tensor (`tensor.q_scale()`, `q_per_channel_scales()`, …).
#[derive(Debug, Clone)]
pub enum Quantizer {
    /// `torch.per_tensor_affine`: `value = (q - zero_point) * scale`.
    PerTensor {
        /// The scale.
        scale: f64,
        /// The zero point.
        zero_point: i64,
    },
    /// `torch.per_channel_affine` (or `_float_qparams`) along `axis`.
    PerChannel {
        /// The qscheme's name without `torch.` (`per_channel_affine`).
        scheme: String,
        /// One scale per channel (a float64 tensor in the file).
        scales: Box<Value>,
        /// One zero point per channel (an int64 tensor in the file).
        zero_points: Box<Value>,
        /// The channel axis.
        axis: i64,
    },
}

/// What a raw tensor is made of.
#[derive(Debug, Clone)]
pub enum RawData {
    /// A dense tensor of a dtype candle lacks.
    Strided(RawStrided),
    /// A quantized tensor: its integer representation and its quantizer.
    Quantized {
        /// The integer representation (`int_repr()`), as stored.
        data: RawStrided,
        /// Scale(s) and zero point(s).
        quantizer: Quantizer,
    },
    /// A sparse tensor: its layout and the components `torch.save` wrote, in its order
    /// (COO: indices, values, size, is_coalesced; CSR/CSC/BSR/BSC: compressed indices,
    /// plain indices, values, size).
    Sparse {
        /// The layout's name (`torch.sparse_coo`, `torch.sparse_csr`, …).
        layout: String,
        /// The components, each an ordinary value (tensors, a size tuple, a bool).
        parts: Vec<Value>,
    },
}

/// A tensor kept as typed raw data because candle cannot hold it exactly.
#[derive(Debug, Clone)]
pub struct RawTensor {
    /// PyTorch's dtype name without `torch.` (`int8`, `complex64`, `qint8`, `float32` for a
    /// sparse float tensor).
    pub dtype: String,
    /// The shape.
    pub size: Vec<usize>,
    /// The data.
    pub data: RawData,
}

/// `(dtype name, bytes per element)` of the dense dtypes that are kept raw.
const RAW_DTYPES: &[(&str, usize)] = &[
    ("int8", 1),
    ("bool", 1),
    ("uint16", 2),
    ("uint64", 8),
    ("complex32", 4),
    ("complex64", 8),
    ("complex128", 16),
    ("float8_e5m2", 1),
    ("float8_e4m3fnuz", 1),
    ("float8_e5m2fnuz", 1),
    ("float8_e8m0fnu", 1),
    ("quint8", 1),
    ("qint8", 1),
    ("qint32", 4),
    ("quint4x2", 1),
    ("quint2x4", 1),
];

/// Bytes per element of a dtype kept raw, or `None` when the dtype is not one of them.
pub fn raw_element_size(dtype: &str) -> Option<usize> {
    RAW_DTYPES
        .iter()
        .find(|(d, _)| *d == dtype)
        .map(|(_, s)| *s)
}

impl RawTensor {
    /// Number of elements (of the dense shape, for sparse tensors too).
    pub fn elem_count(&self) -> usize {
        self.size.iter().product()
    }

    /// `"sparse_coo"`, `"sparse_csr"`, … for sparse tensors, `"quantized"` for quantized ones,
    /// `"strided"` otherwise: what `inspect` shows next to the dtype.
    pub fn layout(&self) -> &str {
        match &self.data {
            RawData::Strided(_) => "strided",
            RawData::Quantized { .. } => "quantized",
            RawData::Sparse { layout, .. } => layout.strip_prefix("torch.").unwrap_or(layout),
        }
    }

    /// Bytes of the storage this tensor uses (for sparse tensors: of its components).
    pub fn nbytes(&self) -> usize {
        match &self.data {
            RawData::Strided(s) | RawData::Quantized { data: s, .. } => s.storage.bytes.len(),
            RawData::Sparse { parts, .. } => parts
                .iter()
                .map(|p| match p {
                    Value::Tensor(t) => t.elem_count() * t.dtype().size_in_bytes(),
                    Value::RawTensor(r) => r.nbytes(),
                    _ => 0,
                })
                .sum(),
        }
    }

    /// The elements of a dense or quantized tensor in row-major order, as raw little-endian
    /// bytes (`element size × elem_count`). `None` for sparse tensors; an error when the view
    /// reaches past its storage.
    pub fn contiguous_bytes(&self) -> Option<Result<Vec<u8>>> {
        let (RawData::Strided(s) | RawData::Quantized { data: s, .. }) = &self.data else {
            return None;
        };
        Some(self.gather(s))
    }

    fn gather(&self, s: &RawStrided) -> Result<Vec<u8>> {
        let esize = raw_element_size(&self.dtype).unwrap_or(1);
        let n = self.elem_count();
        if s.stride.len() != self.size.len() {
            return Err(Error::Type(format!(
                "{} tensor of size {:?} has stride {:?}",
                self.dtype, self.size, s.stride
            )));
        }
        let mut out = Vec::with_capacity(n.saturating_mul(esize).min(s.storage.bytes.len()));
        let mut pos = vec![0usize; self.size.len()];
        for _ in 0..n {
            let at = s.offset
                + pos
                    .iter()
                    .zip(&s.stride)
                    .map(|(p, st)| p * st)
                    .sum::<usize>();
            let bytes = s
                .storage
                .bytes
                .get(at * esize..(at + 1) * esize)
                .ok_or_else(|| {
                    Error::Type(format!(
                        "{} tensor of size {:?} reaches past its storage of {} bytes",
                        self.dtype,
                        self.size,
                        s.storage.bytes.len()
                    ))
                })?;
            out.extend_from_slice(bytes);
            for d in (0..self.size.len()).rev() {
                pos[d] += 1;
                if pos[d] < self.size[d] {
                    break;
                }
                pos[d] = 0;
            }
        }
        Ok(out)
    }

    /// The values as f64, row-major, for statistics and comparisons: integers and bools as
    /// numbers, float8_e5m2 decoded, quantized tensors dequantized per tensor. `None` when there
    /// is no single real number per element (complex, sparse, per-channel quantized, packed
    /// sub-byte types).
    pub fn to_f64_vec(&self) -> Option<Result<Vec<f64>>> {
        let bytes = match self.contiguous_bytes()? {
            Ok(b) => b,
            Err(e) => return Some(Err(e)),
        };
        let ints: Vec<f64> = match self.dtype.as_str() {
            "int8" | "qint8" => bytes.iter().map(|&b| b as i8 as f64).collect(),
            "bool" => bytes.iter().map(|&b| (b != 0) as u8 as f64).collect(),
            "quint8" => bytes.iter().map(|&b| b as f64).collect(),
            "uint16" => bytes
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]) as f64)
                .collect(),
            "qint32" => bytes
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().expect("4")) as f64)
                .collect(),
            "uint64" => bytes
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().expect("8")) as f64)
                .collect(),
            // e5m2 is the top byte of an IEEE half.
            "float8_e5m2" => bytes
                .iter()
                .map(|&b| half::f16::from_bits((b as u16) << 8).to_f64())
                .collect(),
            _ => return None,
        };
        match &self.data {
            RawData::Quantized {
                quantizer: Quantizer::PerTensor { scale, zero_point },
                ..
            } => Some(Ok(ints
                .into_iter()
                .map(|q| (q - *zero_point as f64) * scale)
                .collect())),
            RawData::Quantized { .. } => None,
            _ => Some(Ok(ints)),
        }
    }

    /// The tensor widened exactly into a dtype candle has, for the dense integer dtypes:
    /// `int8` → i16, `bool` → u8 (0/1), `uint16` → u32. `None` for every other raw tensor
    /// (nothing candle holds represents them without loss).
    pub fn to_tensor(&self, device: &Device) -> Option<Result<Tensor>> {
        if !matches!(self.data, RawData::Strided(_)) {
            return None;
        }
        let dtype = match self.dtype.as_str() {
            "int8" => DType::I16,
            "bool" => DType::U8,
            "uint16" => DType::U32,
            _ => return None,
        };
        let values = match self.to_f64_vec()? {
            Ok(v) => v,
            Err(e) => return Some(Err(e)),
        };
        let build = || -> Result<Tensor> {
            let t = Tensor::from_vec(values, self.size.as_slice(), &Device::Cpu)?;
            // int8 widens to i16, which stays on the host for a device that cannot hold it.
            Ok(crate::device_dtypes::load_to(&t.to_dtype(dtype)?, device)?)
        };
        Some(build())
    }
}
