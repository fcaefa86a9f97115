//! Hyper-parameter checks with PyTorch's constructor wording (`Invalid learning rate: nan`).
//!
//! PyTorch's checks are `not 0.0 <= lr` (Adam) or `lr < 0.0` (SGD); the second lets NaN through,
//! and neither refuses infinity, though both train to all-NaN weights. flambeau refuses NaN and
//! infinity everywhere, with PyTorch's message followed by what is expected.

use flambeau_core::{Error, Result};

/// A float as Python's `repr` writes it (`nan`, `inf`, `-1.0`, `1e-05`), so messages read as
/// PyTorch's do.
pub(crate) fn py_float(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.into();
    }
    let s = format!("{x:?}");
    match s.split_once('e') {
        // Python pads the exponent to two digits and always signs it: 1e-05, 1e+20.
        Some((mantissa, exp)) => {
            let (sign, digits) = match exp.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', exp),
            };
            format!("{mantissa}e{sign}{digits:0>2}")
        }
        None => s,
    }
}

/// `x` must be a finite number ≥ 0; otherwise [`Error::InvalidArgument`] for the argument `name`,
/// saying `{what}: {x}` (PyTorch's prefix) and the rule.
pub(crate) fn non_negative(name: &str, what: &str, x: f64) -> Result<()> {
    if x.is_finite() && x >= 0.0 {
        return Ok(());
    }
    Err(Error::invalid_argument(
        name,
        format!("{what}: {}; expected a finite number >= 0", py_float(x)),
    ))
}

/// `x` must be finite (any sign).
pub(crate) fn finite(name: &str, what: &str, x: f64) -> Result<()> {
    if x.is_finite() {
        return Ok(());
    }
    Err(Error::invalid_argument(
        name,
        format!("{what}: {}; expected a finite number", py_float(x)),
    ))
}

/// `x` must lie in `[0, 1)` (Adam's betas).
pub(crate) fn unit_interval(name: &str, what: &str, x: f64) -> Result<()> {
    if (0.0..1.0).contains(&x) {
        return Ok(());
    }
    Err(Error::invalid_argument(
        name,
        format!("{what}: {}; expected a number in [0, 1)", py_float(x)),
    ))
}

/// `x` must be a finite number > 0.
pub(crate) fn positive(name: &str, what: &str, x: f64) -> Result<()> {
    if x.is_finite() && x > 0.0 {
        return Ok(());
    }
    Err(Error::invalid_argument(
        name,
        format!("{what}: {}; expected a finite number > 0", py_float(x)),
    ))
}

#[cfg(test)]
mod tests {
    use super::py_float;

    #[test]
    fn floats_print_as_python_repr() {
        assert_eq!(py_float(f64::NAN), "nan");
        assert_eq!(py_float(f64::INFINITY), "inf");
        assert_eq!(py_float(f64::NEG_INFINITY), "-inf");
        assert_eq!(py_float(-1.0), "-1.0");
        assert_eq!(py_float(0.1), "0.1");
        assert_eq!(py_float(1e-5), "1e-05");
        assert_eq!(py_float(1e20), "1e+20");
    }
}
