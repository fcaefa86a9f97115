//! [`Placement`]: where the replicas of a data-parallel run go, from a device list
//! ([`parse_devices`]: `cpu`, `cuda`, `cuda:N`, `cuda:N,M,…`) and a number of replicas per
//! device, with the backend between them — refusing, before anything starts, the shapes a run
//! cannot train in. Messages name the `flambeau` command's flags (`--device`, `--replicas`,
//! `--batch-size`), which are these arguments.

use candle_core::Device;

use crate::{process_device, Backend, Error, Launch, Result};

/// The devices `spec` lists, opened, in order: `cpu`; `cuda` (the first GPU; under a launcher,
/// each process's `cuda:LOCAL_RANK`); `cuda:N`; `cuda:N,M,…` (each GPU once).
pub fn parse_devices(spec: &str) -> Result<Vec<Device>> {
    let err = |message: String| Error::Device {
        message,
        source: None,
    };
    if spec == "cpu" {
        return Ok(vec![Device::Cpu]);
    }
    let spec_ids = if spec == "cuda" { "cuda:0" } else { spec };
    let Some(ids) = spec_ids.strip_prefix("cuda:") else {
        return Err(err(format!(
            "--device `{spec}`: expected cpu, cuda:N or cuda:N,M"
        )));
    };
    let ids: Vec<usize> = ids
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::Device {
            message: format!("--device `{spec}`: GPU indices must be numbers"),
            source: Some(Box::new(e)),
        })?;
    if let Some(dup) = ids
        .iter()
        .enumerate()
        .find_map(|(i, id)| ids[..i].contains(id).then_some(id))
    {
        return Err(err(format!(
            "--device {spec}: cuda:{dup} is listed twice; for several replicas on one GPU use --replicas N"
        )));
    }
    ids.iter()
        .map(|&id| {
            flambeau_kernels::device::open_cuda(id).map_err(|e| Error::Device {
                message: format!("--device {spec}: cannot open cuda:{id} (this flambeau may be built without CUDA support); use --device cpu"),
                source: Some(Box::new(e)),
            })
        })
        .collect()
}

/// The devices of a run's replicas (the first holds the model, the data and the optimizer)
/// and the backend their gradients meet through.
#[derive(Debug, Clone)]
pub struct Placement {
    /// One device per replica; a device appears once per replica it holds.
    pub devices: Vec<Device>,
    /// NCCL between several GPUs (when built with it); the host otherwise.
    pub backend: Backend,
}

impl Placement {
    /// `replicas` replicas on each device of `spec` (see [`parse_devices`]) for batches of
    /// `batch_size`. Under a launcher (`launch` of several processes) each process trains one
    /// replica on one device, a CUDA one being its `cuda:LOCAL_RANK`. Refused: several
    /// replicas or devices per launched process, several GPUs without NCCL, several replicas
    /// per GPU with NCCL, more replicas than samples in a batch.
    pub fn new(spec: &str, replicas: usize, batch_size: usize, launch: &Launch) -> Result<Self> {
        let err = |message: String| Error::Device {
            message,
            source: None,
        };
        let devices = parse_devices(spec)?;
        if launch.rank_and_world().1 > 1 {
            if replicas > 1 || devices.len() > 1 {
                return Err(err(format!(
                    "launched by {}: each process trains one replica on one device (GPU processes use cuda:LOCAL_RANK); drop --replicas and list one device, and launch more processes instead",
                    launch.launcher()
                )));
            }
            return Ok(Self {
                devices: vec![process_device(launch, &devices[0])?],
                backend: Backend::Host,
            });
        }
        let gpus = devices.iter().filter(|d| d.is_cuda()).count();
        if gpus > 1 && !crate::NCCL_AVAILABLE {
            return Err(err(format!(
                "--device {spec}: training on several GPUs at once needs NCCL, which this flambeau is built without; build with `--features nccl`, or train on one GPU (--device {}, with --replicas N for several replicas on it)",
                spec.split(',').next().unwrap_or(spec)
            )));
        }
        if gpus > 1 && replicas > 1 {
            return Err(err(format!(
                "--device {spec} --replicas {replicas}: NCCL runs one replica per GPU; drop --replicas (several replicas share one GPU only with --device cuda:N)"
            )));
        }
        let devices: Vec<Device> = devices
            .iter()
            .flat_map(|d| std::iter::repeat_n(d.clone(), replicas))
            .collect();
        if devices.len() > batch_size {
            return Err(err(format!(
                "{n} replicas for a batch of {batch_size}: every replica needs at least one sample of each batch; use --batch-size {n} or more, or fewer replicas",
                n = devices.len()
            )));
        }
        // Several GPUs meet through NCCL; replicas sharing a device, through the host.
        #[cfg(feature = "nccl")]
        let backend = if gpus > 1 {
            Backend::Nccl
        } else {
            Backend::Host
        };
        #[cfg(not(feature = "nccl"))]
        let backend = Backend::Host;
        Ok(Self { devices, backend })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(r: Result<impl std::fmt::Debug>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn device_lists() {
        assert!(matches!(parse_devices("cpu").unwrap()[..], [Device::Cpu]));
        assert!(message(parse_devices("gpu")).contains("expected cpu, cuda:N or cuda:N,M"));
        assert!(message(parse_devices("cuda:x")).contains("GPU indices must be numbers"));
        assert!(message(parse_devices("cuda:1,1")).contains("cuda:1 is listed twice"));
        if !candle_core::utils::cuda_is_available() {
            assert!(message(parse_devices("cuda:0")).contains("cannot open cuda:0"));
        }
    }

    #[test]
    fn replicas_on_the_cpu() {
        let p = Placement::new("cpu", 3, 8, &Launch::Alone).unwrap();
        assert_eq!(p.devices.len(), 3);
        assert!(matches!(p.backend, Backend::Host));
        let e = message(Placement::new("cpu", 9, 8, &Launch::Alone));
        assert!(
            e.starts_with("9 replicas for a batch of 8: every replica needs at least one sample"),
            "{e}"
        );
    }
}
