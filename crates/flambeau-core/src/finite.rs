//! Finite checks: find the first weight or buffer holding NaN or infinity, so that a training
//! loop can stop with its name instead of saving a checkpoint nobody can use.

use candle_core::{DType, Tensor};

use crate::{Error, Result, StateDict, VarStore};

/// A tensor with non-finite values: its name and how many of its values are NaN / infinite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonFinite {
    /// The state dict key (`layer1.0.bn1.running_var`).
    pub key: String,
    /// Values that are NaN.
    pub nan: usize,
    /// Values that are +∞ or −∞.
    pub inf: usize,
    /// All values of the tensor.
    pub numel: usize,
}

impl std::fmt::Display for NonFinite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` is not finite ({} NaN and {} infinite of {} values)",
            self.key, self.nan, self.inf, self.numel
        )
    }
}

/// Counts the NaN and infinite values of a floating-point tensor (integer tensors are finite).
fn count_non_finite(t: &Tensor) -> Result<(usize, usize)> {
    if !t.dtype().is_float() {
        return Ok((0, 0));
    }
    // One reduction on the tensor's device: x·0 is NaN exactly where x is NaN or ±∞.
    let probe = t
        .affine(0.0, 0.0)?
        .to_dtype(DType::F32)?
        .sum_all()?
        .to_scalar::<f32>()?;
    if probe.is_finite() {
        return Ok((0, 0));
    }
    let flat = t.flatten_all()?;
    let nan = flat.ne(&flat)?.to_dtype(DType::U32)?.sum_all()?;
    let inf_value = Tensor::new(f32::INFINITY, t.device())?.to_dtype(t.dtype())?;
    let inf = flat.abs()?.broadcast_eq(&inf_value)?;
    let inf = inf.to_dtype(DType::U32)?.sum_all()?;
    Ok((
        nan.to_scalar::<u32>()? as usize,
        inf.to_scalar::<u32>()? as usize,
    ))
}

impl StateDict {
    /// The first tensor, in key order, that holds a NaN or an infinity; `None` when all are
    /// finite.
    pub fn first_non_finite(&self) -> Result<Option<NonFinite>> {
        for (key, t) in self.iter() {
            let (nan, inf) = count_non_finite(t)?;
            if nan + inf > 0 {
                return Ok(Some(NonFinite {
                    key: key.to_string(),
                    nan,
                    inf,
                    numel: t.elem_count(),
                }));
            }
        }
        Ok(None)
    }

    /// Fails with [`Error::NonFinite`] naming the first non-finite tensor (call it before
    /// saving a checkpoint).
    pub fn check_finite(&self) -> Result<()> {
        match self.first_non_finite()? {
            None => Ok(()),
            Some(found) => Err(Error::NonFinite(Box::new(found))),
        }
    }
}

impl VarStore {
    /// [`StateDict::first_non_finite`] over every parameter and persistent buffer.
    pub fn first_non_finite(&self) -> Result<Option<NonFinite>> {
        self.state_dict().first_non_finite()
    }

    /// [`StateDict::check_finite`] over every parameter and persistent buffer.
    pub fn check_finite(&self) -> Result<()> {
        self.state_dict().check_finite()
    }
}
