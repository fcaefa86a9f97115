//! One training or eval workload of `cargo xtask bench train`, timed step by step; prints one
//! JSON line. Run it through xtask, which also runs PyTorch and plain candle on the same work.
//!
//! `bench_train ARCH train|eval BATCH SIZE STEPS [loader]`: with `loader`, training batches come
//! from the DataLoader over the synthetic set instead of one batch kept in memory. The device is
//! the CPU unless `FLAMBEAU_BENCH_DEVICE` names a GPU (`cuda:0`; needs a CUDA build).

use std::sync::Arc;
use std::time::Instant;

#[cfg(feature = "cuda")]
use candle_core::cuda_backend::cudarc::driver as cuda;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, ModuleT, Tensor};
use flambeau_core::VarStore;
use flambeau_nn::loss::cross_entropy;
use flambeau_optim::{Optimizer, ParamGroup, Sgd, SgdConfig};
use flambeau_vision::data::{DataLoader, LoaderConfig, Normalize, Synthetic};
use flambeau_vision::models::{ResNet, ResNetConfig};

const WARMUP: usize = 3;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<()> {
    flambeau_kernels::runtime::configure_for_training();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [arch, mode, batch, size, steps, rest @ ..] = args.as_slice() else {
        bail!("usage: bench_train ARCH train|eval BATCH SIZE STEPS [loader]");
    };
    let (batch, size, steps): (usize, usize, usize) = (
        batch.parse().context("BATCH")?,
        size.parse().context("SIZE")?,
        steps.parse().context("STEPS")?,
    );
    let use_loader = rest.first().is_some_and(|r| r == "loader");
    let train = match mode.as_str() {
        "train" => true,
        "eval" => false,
        other => bail!("mode `{other}`: expected train or eval"),
    };
    let device_name = std::env::var("FLAMBEAU_BENCH_DEVICE").unwrap_or_else(|_| "cpu".into());
    let device = match Some(device_name.as_str()).filter(|d| *d != "cpu") {
        None => Device::Cpu,
        Some(spec) => {
            let id = spec
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .with_context(|| format!("FLAMBEAU_BENCH_DEVICE={spec}: expected cpu or cuda:N"))?;
            flambeau_kernels::device::open_cuda(id)?
        }
    };
    let vs = VarStore::with_seed(&device, DType::F32, 0);
    let model = ResNet::new(vs.root(), ResNetConfig::by_name(arch, 10)?)?;
    let mut opt = Sgd::new(
        vec![ParamGroup::new(vs.parameters())],
        SgdConfig {
            lr: 0.01,
            momentum: 0.9,
            ..Default::default()
        },
    )?;
    let images = Tensor::randn(0f32, 1.0, (batch, 3, size, size), &device)?;
    let labels: Vec<u32> = (0..batch as u32).map(|i| i % 10).collect();
    let labels = Tensor::from_vec(labels, batch, &device)?;
    let mut loader = if use_loader {
        if size != 32 {
            bail!("the synthetic loader makes 32x32 images");
        }
        let cfg = LoaderConfig {
            batch_size: batch,
            normalize: Some(Normalize::cifar10()),
            augment: Some(Default::default()),
            drop_last: true,
            ..Default::default()
        };
        Some(DataLoader::new(
            Arc::new(Synthetic::train(batch * (steps + WARMUP + 1), 0)),
            cfg,
            &device,
        )?)
    } else {
        None
    };
    let mut batches = loader.as_mut().map(|l| l.epoch());
    let clock = Clock::new(&device)?;

    let (total, forward, backward, update) =
        flambeau_kernels::runtime::on_worker(|| -> Result<_> {
            let (mut total, mut forward, mut backward, mut update) =
                (vec![], vec![], vec![], vec![]);
            for _ in 0..WARMUP + steps {
                let t0 = clock.mark()?;
                let (x, y) = match batches.as_mut() {
                    Some(it) => {
                        let b = it.next().context("loader ran out")??;
                        (b.images, b.labels)
                    }
                    None => (images.clone(), labels.clone()),
                };
                let logits = model.forward_t(&x, train)?;
                if !train {
                    let t1 = clock.mark()?;
                    total.push(clock.secs(&t0, &t1)?);
                    continue;
                }
                let loss = cross_entropy(&logits, &y, &Default::default())?;
                let t1 = clock.mark()?;
                let grads = loss.backward()?;
                let t2 = clock.mark()?;
                opt.step(&grads)?;
                let t3 = clock.mark()?;
                total.push(clock.secs(&t0, &t3)?);
                forward.push(clock.secs(&t0, &t1)?);
                backward.push(clock.secs(&t1, &t2)?);
                update.push(clock.secs(&t2, &t3)?);
            }
            Ok((total, forward, backward, update))
        })?;
    let first_step = total[0];
    let after_warmup = |v: Vec<f64>| (v.len() > WARMUP).then(|| median(v[WARMUP..].to_vec()));
    let step = after_warmup(total).context("no steps")?;
    let (forward, backward, update) = if train {
        (
            after_warmup(forward),
            after_warmup(backward),
            after_warmup(update),
        )
    } else {
        (Some(step), None, None)
    };
    let tf32 = clock.tf32();
    println!(
        "{}",
        serde_json::json!({
            "img_s": batch as f64 / step,
            "step_s": step,
            "first_step_s": first_step,
            "forward_s": forward,
            "backward_s": backward,
            "update_s": update,
            "peak_mem_bytes": clock.peak_mem_bytes(),
            "tf32": tf32.map(|t| serde_json::json!({"matmul": t, "conv": t})),
            "timer": clock.name(),
            "device": device_name,
            "threads": rayon::current_num_threads(),
        })
    );
    Ok(())
}

/// Where step times come from: the wall clock on the CPU (candle's CPU ops are synchronous),
/// CUDA events on the device's stream on a GPU (recorded from the thread that launches the
/// step's kernels, so that they land on the stream those kernels use).
enum Clock {
    Wall,
    #[cfg(feature = "cuda")]
    Events(candle_core::CudaDevice),
}

/// One point in time of a [`Clock`].
enum Mark {
    Wall(Instant),
    #[cfg(feature = "cuda")]
    Event(cuda::CudaEvent),
}

impl Clock {
    fn new(device: &Device) -> Result<Self> {
        match device {
            #[cfg(feature = "cuda")]
            Device::Cuda(d) => Ok(Clock::Events(d.clone())),
            Device::Cpu => Ok(Clock::Wall),
            other => bail!("no clock for {other:?}"),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Clock::Wall => "wall",
            #[cfg(feature = "cuda")]
            Clock::Events(_) => "cuda-events",
        }
    }

    fn mark(&self) -> Result<Mark> {
        Ok(match self {
            Clock::Wall => Mark::Wall(Instant::now()),
            #[cfg(feature = "cuda")]
            Clock::Events(d) => Mark::Event(
                d.cuda_stream()
                    .record_event(Some(cuda::sys::CUevent_flags::CU_EVENT_DEFAULT))?,
            ),
        })
    }

    /// Seconds from `a` to `b`; with events, waits for `b` to complete.
    fn secs(&self, a: &Mark, b: &Mark) -> Result<f64> {
        match (a, b) {
            (Mark::Wall(a), Mark::Wall(b)) => Ok((*b - *a).as_secs_f64()),
            #[cfg(feature = "cuda")]
            (Mark::Event(a), Mark::Event(b)) => Ok(f64::from(a.elapsed_ms(b)?) / 1e3),
            #[cfg(feature = "cuda")]
            _ => bail!("marks of two clocks"),
        }
    }

    /// Whether f32 GEMMs may use TF32 (candle's cuBLAS setting; the convolutions of the
    /// device-generic path are GEMMs too); `None` on the CPU.
    fn tf32(&self) -> Option<bool> {
        match self {
            Clock::Wall => None,
            #[cfg(feature = "cuda")]
            Clock::Events(_) => Some(candle_core::cuda_backend::gemm_reduced_precision_f32()),
        }
    }

    /// The high-water mark of the device's current memory pool (what candle allocates from
    /// with `cuMemAllocAsync`): every allocation of this process on that device, like PyTorch's
    /// `max_memory_allocated`. `None` on the CPU or without memory pools.
    fn peak_mem_bytes(&self) -> Option<u64> {
        match self {
            Clock::Wall => None,
            #[cfg(feature = "cuda")]
            Clock::Events(d) => flambeau_kernels::cuda_memory::peak_memory(d).ok(),
        }
    }
}
