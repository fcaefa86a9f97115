//! One training or eval workload of `cargo xtask bench train`, timed step by step; prints one
//! JSON line. Run it through xtask, which also runs PyTorch and plain candle on the same work.
//!
//! `bench_train ARCH train|eval BATCH SIZE STEPS [loader]`: with `loader`, training batches come
//! from the DataLoader over the synthetic set instead of one batch kept in memory. The device is
//! the CPU unless `FLAMBEAU_BENCH_DEVICE` names a GPU (`cuda:0`; needs a CUDA build).

use std::sync::Arc;
use std::time::Instant;

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
    let device = match std::env::var("FLAMBEAU_BENCH_DEVICE").ok().as_deref() {
        None | Some("cpu") => Device::Cpu,
        Some(spec) => {
            let id = spec
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .with_context(|| format!("FLAMBEAU_BENCH_DEVICE={spec}: expected cpu or cuda:N"))?;
            Device::new_cuda(id)?
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

    let (total, forward, backward, update) =
        flambeau_kernels::runtime::on_worker(|| -> Result<_> {
            let (mut total, mut forward, mut backward, mut update) =
                (vec![], vec![], vec![], vec![]);
            for i in 0..WARMUP + steps {
                let t0 = Instant::now();
                let (x, y) = match batches.as_mut() {
                    Some(it) => {
                        let b = it.next().context("loader ran out")??;
                        (b.images, b.labels)
                    }
                    None => (images.clone(), labels.clone()),
                };
                let logits = model.forward_t(&x, train)?;
                if !train {
                    logits.flatten_all()?.to_vec1::<f32>()?; // wait for the result
                    if i >= WARMUP {
                        total.push(t0.elapsed().as_secs_f64());
                    }
                    continue;
                }
                let loss = cross_entropy(&logits, &y, &Default::default())?;
                loss.to_scalar::<f32>()?;
                let t1 = Instant::now();
                let grads = loss.backward()?;
                device.synchronize()?;
                let t2 = Instant::now();
                opt.step(&grads)?;
                device.synchronize()?;
                let t3 = Instant::now();
                if i >= WARMUP {
                    total.push((t3 - t0).as_secs_f64());
                    forward.push((t1 - t0).as_secs_f64());
                    backward.push((t2 - t1).as_secs_f64());
                    update.push((t3 - t2).as_secs_f64());
                }
            }
            Ok((total, forward, backward, update))
        })?;
    let step = median(total);
    let phases = if train {
        format!(
            r#","forward_s":{},"backward_s":{},"update_s":{}"#,
            median(forward),
            median(backward),
            median(update)
        )
    } else {
        String::new()
    };
    println!(
        r#"{{"img_s":{},"step_s":{step}{phases}}}"#,
        batch as f64 / step
    );
    Ok(())
}
