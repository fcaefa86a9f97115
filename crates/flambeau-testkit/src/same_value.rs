//! [`assert_same_value`]: two checkpoint values equal, tensors bit for bit — what a bit-exact
//! resume test compares.

use candle_core::{DType, Tensor};
use flambeau_core::Value;

fn bits(t: &Tensor) -> Vec<u64> {
    t.flatten_all()
        .and_then(|t| t.to_dtype(DType::F64))
        .and_then(|t| t.to_vec1::<f64>())
        .unwrap()
        .into_iter()
        .map(f64::to_bits)
        .collect()
}

/// Panics with the path of the first difference: dicts key for key in order, sequences item for
/// item, tensors by dtype, shape and bits, anything else by its `Debug` text.
pub fn assert_same_value(a: &Value, b: &Value, path: &str) {
    match (a, b) {
        (Value::Tensor(x), Value::Tensor(y)) => {
            assert_eq!((x.dtype(), x.dims()), (y.dtype(), y.dims()), "{path}");
            assert!(bits(x) == bits(y), "{path}: tensors differ");
        }
        (Value::Dict(x), Value::Dict(y)) => {
            let kx: Vec<_> = x.entries.iter().map(|(k, _)| format!("{k:?}")).collect();
            let ky: Vec<_> = y.entries.iter().map(|(k, _)| format!("{k:?}")).collect();
            assert_eq!(kx, ky, "{path}: keys");
            for ((k, v), (_, w)) in x.entries.iter().zip(&y.entries) {
                assert_same_value(v, w, &format!("{path}.{k:?}"));
            }
        }
        (Value::List(x), Value::List(y)) | (Value::Tuple(x), Value::Tuple(y)) => {
            assert_eq!(x.len(), y.len(), "{path}: length");
            for (i, (v, w)) in x.iter().zip(y).enumerate() {
                assert_same_value(v, w, &format!("{path}[{i}]"));
            }
        }
        _ => assert_eq!(format!("{a:?}"), format!("{b:?}"), "{path}"),
    }
}
