//! A protocol-2 pickler that uses only the opcodes and globals `torch.load(weights_only=True)`
//! accepts: containers, numbers, strings, bytes (via `_codecs.encode`), OrderedDict/Counter,
//! `torch.device`, dtypes and tensors (`_rebuild_tensor_v2` over persistent storages).

use candle_core::Tensor;
use flambeau_core::{Dict, DictKind, Quantizer, RawData, RawStorage, RawStrided, RawTensor, Value};

use crate::{storage, Error, Result};

/// Where a tensor lives in the archive.
#[derive(Debug, Clone)]
pub struct TensorRef {
    /// Storage record key (`"0"`, `"1"`, …).
    pub key: String,
    /// Storage class (`FloatStorage`), or `None` for dtypes without one (uint32, float8…),
    /// which are written as an untyped storage read back as `dtype`.
    pub class: Option<&'static str>,
    /// PyTorch's dtype name.
    pub dtype: &'static str,
    /// Elements in the whole storage.
    pub storage_numel: usize,
    /// Bytes per element.
    pub element_size: usize,
    /// Offset of the tensor in its storage, in elements.
    pub offset: usize,
    /// Shape.
    pub size: Vec<usize>,
    /// Strides, in elements.
    pub stride: Vec<usize>,
}

/// Collects the storages of the tensors being pickled.
pub trait StorageSink {
    /// Registers a tensor (sharing a storage with an earlier one if they share in memory).
    fn register(&mut self, t: &Tensor) -> Result<TensorRef>;
    /// Registers a raw storage (views of one storage share its record); returns its key.
    fn register_raw(&mut self, storage: &RawStorage) -> String;
}

/// Pickles `value` (protocol 2).
pub fn dump(value: &Value, sink: &mut dyn StorageSink) -> Result<Vec<u8>> {
    let mut p = Pickler {
        out: vec![0x80, 2],
        sink,
    };
    p.value(value)?;
    p.out.push(b'.');
    Ok(p.out)
}

struct Pickler<'s> {
    out: Vec<u8>,
    sink: &'s mut dyn StorageSink,
}

/// Items per APPENDS / SETITEMS batch, as Python's pickler does.
const BATCH: usize = 1000;

impl Pickler<'_> {
    fn global(&mut self, module: &str, name: &str) {
        self.out.push(b'c');
        self.out.extend_from_slice(module.as_bytes());
        self.out.push(b'\n');
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(b'\n');
    }

    fn str(&mut self, s: &str) {
        self.out.push(b'X');
        self.out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.out.extend_from_slice(s.as_bytes());
    }

    fn int(&mut self, i: i64) {
        if (0..256).contains(&i) {
            self.out.extend_from_slice(&[b'K', i as u8]);
        } else if (0..65536).contains(&i) {
            self.out.push(b'M');
            self.out.extend_from_slice(&(i as u16).to_le_bytes());
        } else if i32::try_from(i).is_ok() {
            self.out.push(b'J');
            self.out.extend_from_slice(&(i as i32).to_le_bytes());
        } else {
            self.out.extend_from_slice(&[0x8a, 8]);
            self.out.extend_from_slice(&i.to_le_bytes());
        }
    }

    fn tuple(&mut self, items: &[Value]) -> Result<()> {
        match items.len() {
            0 => self.out.push(b')'),
            n @ 1..=3 => {
                for v in items {
                    self.value(v)?;
                }
                self.out.push(0x84 + n as u8);
            }
            _ => {
                self.out.push(b'(');
                for v in items {
                    self.value(v)?;
                }
                self.out.push(b't');
            }
        }
        Ok(())
    }

    fn usizes(&mut self, items: &[usize]) -> Result<()> {
        let values: Vec<Value> = items.iter().map(|&x| Value::Int(x as i64)).collect();
        self.tuple(&values)
    }

    fn dict_items(&mut self, d: &Dict) -> Result<()> {
        for chunk in d.entries.chunks(BATCH) {
            self.out.push(b'(');
            for (k, v) in chunk {
                self.value(k)?;
                self.value(v)?;
            }
            self.out.push(b'u');
        }
        Ok(())
    }

    /// `('storage', torch.<X>Storage, key, 'cpu', numel)` as a persistent id, or the untyped
    /// form `('storage', torch.storage.UntypedStorage, key, 'cpu', nbytes)` for dtypes that
    /// have no storage class.
    fn persistent_id(&mut self, r: &TensorRef) {
        self.out.push(b'(');
        self.str("storage");
        match r.class {
            Some(class) => {
                self.global("torch", class);
                self.str(&r.key);
                self.str("cpu");
                self.int(r.storage_numel as i64);
            }
            None => {
                self.global("torch.storage", "UntypedStorage");
                self.str(&r.key);
                self.str("cpu");
                self.int((r.storage_numel * r.element_size) as i64);
            }
        }
        self.out.push(b't');
        self.out.push(b'Q');
    }

    /// `_rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())`, or `_v3` with
    /// the dtype for an untyped storage.
    fn tensor_ref(&mut self, r: &TensorRef) -> Result<()> {
        let v3 = r.class.is_none();
        self.global(
            "torch._utils",
            if v3 {
                "_rebuild_tensor_v3"
            } else {
                "_rebuild_tensor_v2"
            },
        );
        self.out.push(b'(');
        self.persistent_id(r);
        self.int(r.offset as i64);
        self.usizes(&r.size)?;
        self.usizes(&r.stride)?;
        self.out.push(0x89); // requires_grad = False
        self.global("collections", "OrderedDict");
        self.out.push(b')');
        self.out.push(b'R');
        if v3 {
            self.global("torch", r.dtype);
        }
        self.out.push(b't');
        self.out.push(b'R');
        Ok(())
    }

    fn tensor(&mut self, t: &Tensor) -> Result<()> {
        let r = self.sink.register(t)?;
        self.tensor_ref(&r)
    }

    fn raw_ref(&mut self, t: &RawTensor, s: &RawStrided) -> Result<TensorRef> {
        let st = storage::by_dtype(&t.dtype)
            .ok_or_else(|| Error::Unwritable(format!("a tensor of dtype {}", t.dtype)))?;
        let key = self.sink.register_raw(&s.storage);
        Ok(TensorRef {
            key,
            class: st.class,
            dtype: st.dtype,
            storage_numel: s.storage.bytes.len() / st.size,
            element_size: st.size,
            offset: s.offset,
            size: t.size.clone(),
            stride: s.stride.clone(),
        })
    }

    /// A tensor candle cannot hold, written back exactly as torch.save wrote it.
    fn raw_tensor(&mut self, t: &RawTensor) -> Result<()> {
        match &t.data {
            RawData::Strided(s) => {
                let r = self.raw_ref(t, s)?;
                self.tensor_ref(&r)
            }
            RawData::Quantized { data, quantizer } => {
                let r = self.raw_ref(t, data)?;
                let class = r.class.ok_or_else(|| {
                    Error::Unwritable(format!("a quantized tensor of dtype {}", t.dtype))
                })?;
                self.global("torch._utils", "_rebuild_qtensor");
                self.out.push(b'(');
                self.persistent_id(&TensorRef {
                    class: Some(class),
                    ..r.clone()
                });
                self.int(r.offset as i64);
                self.usizes(&r.size)?;
                self.usizes(&r.stride)?;
                match quantizer {
                    Quantizer::PerTensor { scale, zero_point } => {
                        self.global("torch", "per_tensor_affine");
                        self.value(&Value::Float(*scale))?;
                        self.int(*zero_point);
                        self.out.push(0x87);
                    }
                    Quantizer::PerChannel {
                        scheme,
                        scales,
                        zero_points,
                        axis,
                    } => {
                        self.out.push(b'(');
                        self.global("torch", scheme);
                        self.value(scales)?;
                        self.value(zero_points)?;
                        self.int(*axis);
                        self.out.push(b't');
                    }
                }
                self.out.push(0x89); // requires_grad = False
                self.global("collections", "OrderedDict");
                self.out.extend_from_slice(b")R");
                self.out.extend_from_slice(b"tR");
                Ok(())
            }
            RawData::Sparse { layout, parts } => {
                self.global("torch._utils", "_rebuild_sparse_tensor");
                self.global("torch.serialization", "_get_layout");
                self.str(layout);
                self.out.extend_from_slice(&[0x85, b'R']);
                self.tuple(parts)?;
                self.out.extend_from_slice(&[0x86, b'R']);
                Ok(())
            }
        }
    }

    fn value(&mut self, v: &Value) -> Result<()> {
        match v {
            Value::None => self.out.push(b'N'),
            Value::Bool(b) => self.out.push(if *b { 0x88 } else { 0x89 }),
            Value::Int(i) => self.int(*i),
            Value::BigInt(bytes) => {
                let n = u8::try_from(bytes.len())
                    .map_err(|_| Error::Unwritable("an integer wider than 255 bytes".into()))?;
                self.out.extend_from_slice(&[0x8a, n]);
                self.out.extend_from_slice(bytes);
            }
            Value::Float(f) => {
                self.out.push(b'G');
                self.out.extend_from_slice(&f.to_be_bytes());
            }
            Value::Str(s) => self.str(s),
            Value::Bytes(b) => {
                // Protocol 2 has no bytes opcode: `_codecs.encode(latin1_text, 'latin1')`.
                self.global("_codecs", "encode");
                let text: String = b.iter().map(|&c| c as char).collect();
                self.str(&text);
                self.str("latin1");
                self.out.extend_from_slice(&[0x86, b'R']);
            }
            Value::List(items) => {
                self.out.push(b']');
                for chunk in items.chunks(BATCH) {
                    self.out.push(b'(');
                    for x in chunk {
                        self.value(x)?;
                    }
                    self.out.push(b'e');
                }
            }
            Value::Tuple(items) => self.tuple(items)?,
            Value::Set(items) => {
                self.global("builtins", "set");
                self.value(&Value::List(items.clone()))?;
                self.out.extend_from_slice(&[0x85, b'R']);
            }
            Value::Dict(d) => {
                match d.kind {
                    DictKind::Plain => {
                        self.out.push(b'}');
                        self.dict_items(d)?;
                    }
                    DictKind::Ordered => {
                        self.global("collections", "OrderedDict");
                        self.out.extend_from_slice(b")R");
                        self.dict_items(d)?;
                    }
                    DictKind::Counter => {
                        self.global("collections", "Counter");
                        self.out.push(b'}');
                        self.dict_items(d)?;
                        self.out.extend_from_slice(&[0x85, b'R']);
                    }
                }
                if let Some(attrs) = &d.attrs {
                    if d.kind == DictKind::Ordered {
                        self.value(attrs)?;
                        self.out.push(b'b');
                    }
                }
            }
            Value::Tensor(t) => self.tensor(t)?,
            Value::RawTensor(t) => self.raw_tensor(t)?,
            Value::Device(d) => {
                self.global("torch", "device");
                self.str(d);
                self.out.extend_from_slice(&[0x85, b'R']);
            }
            Value::Dtype(d) => self.global("torch", d),
            Value::Object(o) => {
                return Err(Error::Unwritable(format!(
                    "an object of class `{}`: torch.load's default weights_only loader refuses arbitrary classes; convert it to plain values (a dict of its fields) or drop it",
                    o.class
                )))
            }
        }
        Ok(())
    }
}
