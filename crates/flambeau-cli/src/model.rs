//! The model and device flags: `--arch` and `--device`.

use anyhow::{bail, Result};
use candle_core::Device;

/// The architectures `--arch` accepts.
pub const ARCHS: [&str; 5] = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"];

/// `--device cpu|cuda|cuda:N`; `doing` says what for (`evaluating`): one device only.
pub fn parse_device(spec: &str, doing: &str) -> Result<Device> {
    if let Some((first, _)) = spec.split_once(',') {
        bail!("--device {spec}: {doing} on several GPUs at once is not available; use one GPU (--device {first})");
    }
    Ok(flambeau_parallel::parse_devices(spec)?
        .into_iter()
        .next()
        .expect("parse_devices returns at least one"))
}
