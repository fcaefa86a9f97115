//! Which dtypes a device can hold — the one owner of that rule.
//!
//! candle 0.11.1's CUDA backend stores i16 and i32 tensors but has no kernels to copy, cast or
//! fill them (candle-kernels 0.11.1 builds `ucopy_*`, `copy2d_*` and `cast_*` for u8, u32, i64,
//! f16, bf16, f32, f64 and f8e4m3 only; `to_dtype` of a CUDA i32 tensor fails with a missing
//! `cast_i32_f32`, `contiguous()` with a missing `ucopy_i32`), and none at all for the
//! byte-stored sub-byte floats (F6E2M3, F6E3M2, F4, F8E8M0: "Dummy types not supported in CUDA
//! backend"). A tensor of such a dtype that reached a GPU could only fail later, far from its
//! cause. So:
//!
//! - loading to such a device ([`load_to`]: checkpoint storages, `StateDict::to_device`,
//!   optimizer state) leaves these tensors on the host, like raw tensors and the ints of a
//!   checkpoint's `extras`;
//! - copying one into a parameter or buffer ([`cast_to`]) casts it on the host to the
//!   parameter's dtype first, then moves it;
//! - a parameter or buffer of such a dtype on such a device is refused ([`check`]:
//!   [`Error::DeviceDtype`]).

use candle_core::{DType, Device, DeviceLocation, Tensor};

use crate::{Error, Result};

/// Whether a device at `location` can hold tensors of `dtype` and run candle's copy and cast
/// kernels on them. A pure function of the two. Every dtype of candle 0.11.1 is listed; one
/// candle adds later (`DType` is non-exhaustive) stays off CUDA until it is decided here.
pub fn holds(dtype: DType, location: DeviceLocation) -> bool {
    match location {
        DeviceLocation::Cpu => true,
        DeviceLocation::Cuda { .. } => match dtype {
            DType::U8
            | DType::U32
            | DType::I64
            | DType::BF16
            | DType::F16
            | DType::F32
            | DType::F64
            | DType::F8E4M3 => true,
            DType::I16 | DType::I32 | DType::F6E2M3 | DType::F6E3M2 | DType::F4 | DType::F8E8M0 => {
                false
            }
            _ => false,
        },
        // flambeau does not train on Metal; candle's Metal backend is not restricted here.
        DeviceLocation::Metal { .. } => true,
    }
}

/// Whether `device` can hold tensors of `dtype` (see [`holds`]).
pub fn device_holds(dtype: DType, device: &Device) -> bool {
    holds(dtype, device.location())
}

/// Refuses a parameter or buffer `name` of `dtype` on a `device` that cannot hold it.
pub fn check(name: &str, dtype: DType, device: &Device) -> Result<()> {
    if device_holds(dtype, device) {
        Ok(())
    } else {
        Err(Error::DeviceDtype {
            name: name.to_string(),
            dtype,
            device: format!("{:?}", device.location()),
        })
    }
}

/// `t` moved to `device` for loading (PyTorch's `map_location`), or kept on the host when
/// `device` cannot hold its dtype (brought back to the CPU if it is on such a device).
pub fn load_to(t: &Tensor, device: &Device) -> candle_core::Result<Tensor> {
    if device_holds(t.dtype(), device) {
        t.to_device(device)
    } else {
        t.to_device(&Device::Cpu)
    }
}

/// `src` as `dtype` on `device`, for copying into a parameter or buffer of that dtype: moved
/// then cast where both devices hold `src`'s dtype (the cast runs on `device`), cast on the
/// host then moved otherwise. `dtype` itself must be one `device` holds ([`check`]), which the
/// store guarantees for its parameters and buffers.
pub fn cast_to(src: &Tensor, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
    let via_host = !device_holds(src.dtype(), device) || !device_holds(src.dtype(), src.device());
    if src.dtype() == dtype {
        return src.to_device(device);
    }
    if via_host {
        src.to_device(&Device::Cpu)?
            .to_dtype(dtype)?
            .to_device(device)
    } else {
        src.to_device(device)?.to_dtype(dtype)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every dtype of candle 0.11.1.
    fn all_dtypes() -> Vec<DType> {
        let all = [
            DType::U8,
            DType::U32,
            DType::I16,
            DType::I32,
            DType::I64,
            DType::BF16,
            DType::F16,
            DType::F32,
            DType::F64,
            DType::F8E4M3,
            DType::F6E2M3,
            DType::F6E3M2,
            DType::F4,
            DType::F8E8M0,
        ];
        all.to_vec()
    }

    #[test]
    fn the_rule_for_every_dtype_and_device_kind() {
        let cuda = DeviceLocation::Cuda { gpu_id: 0 };
        let refused_on_cuda = [
            DType::I16,
            DType::I32,
            DType::F6E2M3,
            DType::F6E3M2,
            DType::F4,
            DType::F8E8M0,
        ];
        for d in all_dtypes() {
            assert!(holds(d, DeviceLocation::Cpu), "{d:?} on the CPU");
            assert!(
                holds(d, DeviceLocation::Metal { gpu_id: 0 }),
                "{d:?} on Metal"
            );
            assert_eq!(
                holds(d, cuda),
                !refused_on_cuda.contains(&d),
                "{d:?} on CUDA"
            );
            assert_eq!(holds(d, cuda), holds(d, DeviceLocation::Cuda { gpu_id: 3 }));
            assert!(device_holds(d, &Device::Cpu));
            assert!(check("w", d, &Device::Cpu).is_ok());
        }
    }

    #[test]
    fn the_refusal_names_the_tensor_dtype_and_device() {
        // The error is built from the location alone: no GPU needed to test its wording.
        let e = Error::DeviceDtype {
            name: "fc.weight".into(),
            dtype: DType::I32,
            device: format!("{:?}", DeviceLocation::Cuda { gpu_id: 1 }),
        };
        let text = e.to_string();
        assert!(text.contains("`fc.weight`"), "{text}");
        assert!(
            text.contains("I32") && text.contains("Cuda { gpu_id: 1 }"),
            "{text}"
        );
        assert!(text.contains("i64"), "{text}");
    }

    #[test]
    fn loading_and_casting_on_the_cpu_keep_every_value() -> Result<()> {
        let cpu = Device::Cpu;
        let i32s = Tensor::new(&[-3i32, 0, 7], &cpu)?;
        let i16s = Tensor::new(&[-3i16, 0, 7], &cpu)?;
        for t in [&i32s, &i16s] {
            let loaded = load_to(t, &cpu)?;
            assert!(loaded.device().is_cpu());
            assert_eq!(loaded.dtype(), t.dtype());
            for dtype in [DType::F32, DType::I64, DType::F64, DType::BF16] {
                let c = cast_to(t, dtype, &cpu)?;
                assert_eq!(c.dtype(), dtype);
                assert_eq!(c.to_dtype(DType::F64)?.to_vec1::<f64>()?, [-3.0, 0.0, 7.0]);
            }
            assert_eq!(cast_to(t, t.dtype(), &cpu)?.dtype(), t.dtype());
        }
        Ok(())
    }
}
