//! How two runs' tensors are compared.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use candle_core::{DType, Tensor};

/// Everything one run produced, on the CPU, by name (`loss`, `grad.NAME`, `after.NAME`, …).
pub type StepResult = BTreeMap<String, Tensor>;

/// How a tensor's difference is measured.
#[derive(Clone, Copy, Debug)]
pub enum Metric {
    /// `max |a - b| / max |b|`: every entry, relative to the tensor's largest.
    MaxEntry,
    /// `‖a - b‖₂ / ‖b‖₂`: the whole tensor (an entry flipped by a ReLU / max-pool tie between
    /// summation orders moves this little, `MaxEntry` a lot).
    L2,
}

/// The worst difference over the tensors of `reference` (which `other` must all have) and the
/// tensor it was found in.
pub fn worst(reference: &StepResult, other: &StepResult, metric: Metric) -> Result<(f64, String)> {
    let mut worst = (0.0f64, String::new());
    for (name, expected) in reference {
        let got = other
            .get(name)
            .with_context(|| format!("{name} is missing on the checked side"))?;
        let err =
            relative_error(got, expected, metric).with_context(|| format!("comparing {name}"))?;
        if std::env::var_os("DEVICE_CHECK_VERBOSE").is_some() {
            let norm = expected
                .to_dtype(DType::F64)?
                .sqr()?
                .sum_all()?
                .to_scalar::<f64>()?
                .sqrt();
            println!("  {name}: {err:.2e} (norm {norm:.2e})");
        }
        if err > worst.0 || err.is_nan() {
            worst = (err, name.clone());
            if err.is_nan() {
                break;
            }
        }
    }
    Ok(worst)
}

/// The difference of `a` from `b` under `metric` (the bare difference when `b` is zero).
pub fn relative_error(a: &Tensor, b: &Tensor, metric: Metric) -> Result<f64> {
    anyhow::ensure!(
        a.dims() == b.dims(),
        "shapes {:?} vs {:?}",
        a.dims(),
        b.dims()
    );
    let (a, b) = (a.to_dtype(DType::F64)?, b.to_dtype(DType::F64)?);
    let diff = (&a - &b)?;
    let (diff, scale) = match metric {
        Metric::MaxEntry => (max_abs(&diff)?, max_abs(&b)?),
        Metric::L2 => (l2(&diff)?, l2(&b)?),
    };
    Ok(if scale == 0.0 { diff } else { diff / scale })
}

fn max_abs(t: &Tensor) -> Result<f64> {
    Ok(t.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()?)
}

fn l2(t: &Tensor) -> Result<f64> {
    Ok(t.sqr()?.sum_all()?.to_scalar::<f64>()?.sqrt())
}
