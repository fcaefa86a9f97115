//! [`assert_same_value`]: two checkpoint values equal, tensors bit for bit — what a bit-exact
//! resume test compares; [`assert_close_value`]: the same walk with a tolerance on tensors and
//! floats — what a data-parallel run against a one-device run compares.

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
    walk(
        a,
        b,
        path,
        &|x, y, path| assert!(bits(x) == bits(y), "{path}: tensors differ"),
        None,
    );
}

/// [`assert_same_value`] with tensors and floats equal within `tol` (absolute and relative, as
/// [`crate::assert_close`]).
pub fn assert_close_value(a: &Value, b: &Value, path: &str, tol: f64) {
    walk(
        a,
        b,
        path,
        &|x, y, path| crate::assert_close(path, x, y, tol, tol),
        Some(tol),
    );
}

/// Compares tensors with `tensors`, floats within `float_tol` (exactly when `None`).
fn walk(
    a: &Value,
    b: &Value,
    path: &str,
    tensors: &dyn Fn(&Tensor, &Tensor, &str),
    float_tol: Option<f64>,
) {
    match (a, b) {
        (Value::Tensor(x), Value::Tensor(y)) => {
            assert_eq!((x.dtype(), x.dims()), (y.dtype(), y.dims()), "{path}");
            tensors(x, y, path);
        }
        (Value::Float(x), Value::Float(y)) if float_tol.is_some() => {
            let tol = float_tol.unwrap_or_default();
            assert!(
                (x - y).abs() <= tol * (1.0 + y.abs()),
                "{path}: {x} vs {y} (tolerance {tol})"
            );
        }
        (Value::Dict(x), Value::Dict(y)) => {
            let kx: Vec<_> = x.entries.iter().map(|(k, _)| format!("{k:?}")).collect();
            let ky: Vec<_> = y.entries.iter().map(|(k, _)| format!("{k:?}")).collect();
            assert_eq!(kx, ky, "{path}: keys");
            for ((k, v), (_, w)) in x.entries.iter().zip(&y.entries) {
                walk(v, w, &format!("{path}.{k:?}"), tensors, float_tol);
            }
        }
        (Value::List(x), Value::List(y)) | (Value::Tuple(x), Value::Tuple(y)) => {
            assert_eq!(x.len(), y.len(), "{path}: length");
            for (i, (v, w)) in x.iter().zip(y).enumerate() {
                walk(v, w, &format!("{path}[{i}]"), tensors, float_tol);
            }
        }
        _ => assert_eq!(format!("{a:?}"), format!("{b:?}"), "{path}"),
    }
}
