//! Which implementation the ops take: the fast CPU kernels, or the device-generic path.
//!
//! Every op has a device-generic implementation built from candle tensor ops (what runs on a
//! GPU) and, for the CPU, a fast kernel. `FLAMBEAU_KERNELS=generic` — read once, by the library
//! itself, so every program built on flambeau honours it — or [`set_kernel_mode`] forces the
//! generic path on the CPU too, which is how the code a GPU runs is tested against PyTorch on a
//! machine without one.

use std::sync::atomic::{AtomicU8, Ordering};

use candle_core::{Device, Tensor};

/// The environment variable that selects the kernels: `generic` or `fast` (the default).
pub const ENV_VAR: &str = "FLAMBEAU_KERNELS";

/// Which implementation flambeau's ops use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelMode {
    /// Fast CPU kernels where one exists for the device and dtype; the generic path elsewhere.
    Fast,
    /// The device-generic path everywhere, the CPU included.
    Generic,
}

const UNSET: u8 = 0;
const FAST: u8 = 1;
const GENERIC: u8 = 2;

static MODE: AtomicU8 = AtomicU8::new(UNSET);

/// The mode in force: the last [`set_kernel_mode`], else `FLAMBEAU_KERNELS` (read on first use).
pub fn kernel_mode() -> KernelMode {
    match MODE.load(Ordering::Relaxed) {
        FAST => KernelMode::Fast,
        GENERIC => KernelMode::Generic,
        _ => {
            let mode = from_env(std::env::var(ENV_VAR).ok().as_deref());
            // A concurrent set_kernel_mode wins over the environment.
            let _ =
                MODE.compare_exchange(UNSET, encode(mode), Ordering::Relaxed, Ordering::Relaxed);
            kernel_mode()
        }
    }
}

/// Forces `mode` for the whole process (overrides `FLAMBEAU_KERNELS`).
pub fn set_kernel_mode(mode: KernelMode) {
    MODE.store(encode(mode), Ordering::Relaxed);
}

fn encode(mode: KernelMode) -> u8 {
    match mode {
        KernelMode::Fast => FAST,
        KernelMode::Generic => GENERIC,
    }
}

/// `generic` selects the generic path; anything else (unset, empty, `fast`) the fast one. An
/// unknown value is reported once on stderr rather than failing every op that asks.
fn from_env(value: Option<&str>) -> KernelMode {
    match value.map(str::trim) {
        Some(v) if v.eq_ignore_ascii_case("generic") => KernelMode::Generic,
        None | Some("") => KernelMode::Fast,
        Some(v) if v.eq_ignore_ascii_case("fast") => KernelMode::Fast,
        Some(other) => {
            eprintln!(
                "flambeau: ignoring {ENV_VAR}={other:?} (expected `generic` or `fast`); using the fast kernels"
            );
            KernelMode::Fast
        }
    }
}

/// Whether a fast CPU kernel may run on `t`: it lives on the CPU and the mode is [`KernelMode::Fast`].
pub fn fast_cpu(t: &Tensor) -> bool {
    matches!(t.device(), Device::Cpu) && kernel_mode() == KernelMode::Fast
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_values() {
        assert_eq!(from_env(None), KernelMode::Fast);
        assert_eq!(from_env(Some("")), KernelMode::Fast);
        assert_eq!(from_env(Some("fast")), KernelMode::Fast);
        assert_eq!(from_env(Some("generic")), KernelMode::Generic);
        assert_eq!(from_env(Some(" GENERIC ")), KernelMode::Generic);
        assert_eq!(from_env(Some("cuda")), KernelMode::Fast);
    }
}
