//! `cargo xtask bench parallel`: the cost of training through CPU replicas against one device.
//! Prints one JSON line; run it through xtask, which formats it.
//!
//! `bench_parallel STEPS ROUNDS`: ResNet-18, batch 32 of the synthetic 3×32×32 set, SGD
//! (momentum 0.9). The configurations — the plain step (forward, backward, optimizer step, no
//! group), a [`ReplicaGroup`] of 1, 2 and 3 CPU replicas, and the collectives of a step alone
//! (the parameters and buffers broadcast from rank 0, the gradients reduced to it, over 2 and 3
//! host-staged ranks) — run in turn, `STEPS` timed steps each, for `ROUNDS` rounds, after one
//! warm-up round. The replicas share the machine's cores: the ratio is the overhead of splitting
//! the batch and meeting in the collective, not a speed-up.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, ModuleT, Tensor};
use flambeau_core::VarStore;
use flambeau_nn::loss::cross_entropy;
use flambeau_optim::{Optimizer, ParamGroup, Sgd, SgdConfig};
use flambeau_parallel::{Collective, HostCollective, ReplicaGroup, ShardLoss};
use flambeau_vision::data::{DataLoader, LoaderConfig, Normalize, Synthetic};
use flambeau_vision::models::{ResNet, ResNetConfig};

const BATCH: usize = 32;

/// What one configuration runs per step.
enum Config {
    /// Forward, backward and optimizer step on the whole batch, without a group.
    Plain,
    /// The same through a group of this many CPU replicas.
    Group(ReplicaGroup),
    /// Only the step's collectives over this many ranks (rank 0 here, the others on threads).
    Collectives(CollectiveRig),
}

/// Ranks 1.. of a host-staged group doing a step's collectives on their own threads, with
/// tensors of the model's shapes; rank 0 is the bench's thread.
struct CollectiveRig {
    root: HostCollective,
    go: Vec<std::sync::mpsc::Sender<bool>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl CollectiveRig {
    fn new(world: usize, entries: &[Tensor], params: &[Tensor]) -> Result<Self> {
        let mut handles = HostCollective::group(world).into_iter();
        let root = handles.next().context("rank 0")?;
        let (mut go, mut threads) = (Vec::new(), Vec::new());
        for mut h in handles {
            let (tx, rx) = std::sync::mpsc::channel::<bool>();
            let entries: Vec<Tensor> = entries
                .iter()
                .map(Tensor::zeros_like)
                .collect::<candle_core::Result<_>>()?;
            let grads: Vec<Tensor> = params
                .iter()
                .map(Tensor::ones_like)
                .collect::<candle_core::Result<_>>()?;
            threads.push(std::thread::spawn(move || {
                while rx.recv().unwrap_or(false) {
                    h.broadcast(&entries, 0).expect("broadcast");
                    h.reduce_sum(&grads, 0).expect("reduce");
                }
            }));
            go.push(tx);
        }
        Ok(Self { root, go, threads })
    }

    /// One step's collectives: what `ReplicaGroup::step` exchanges.
    fn step(&mut self, entries: &[Tensor], grads: &[Tensor]) -> Result<()> {
        for g in &self.go {
            g.send(true)?;
        }
        self.root.broadcast(entries, 0)?;
        self.root
            .reduce_sum(grads, 0)?
            .context("rank 0 is the root")?;
        Ok(())
    }
}

impl Drop for CollectiveRig {
    fn drop(&mut self) {
        self.go.clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.1), at(0.9))
}

fn main() -> Result<()> {
    flambeau_kernels::runtime::configure_for_training();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [steps, rounds] = args.as_slice() else {
        bail!("usage: bench_parallel STEPS ROUNDS");
    };
    let (steps, rounds): (usize, usize) = (
        steps.parse().context("STEPS")?,
        rounds.parse().context("ROUNDS")?,
    );
    let device = Device::Cpu;
    let vs = VarStore::with_seed(&device, DType::F32, 0);
    let build =
        |vb: flambeau_core::VarBuilder| ResNet::new(vb, ResNetConfig::by_name("resnet18", 10)?);
    let model = build(vs.root())?;
    let mut opt = Sgd::new(
        vec![ParamGroup::new(vs.parameters())],
        SgdConfig {
            lr: 0.01,
            momentum: 0.9,
            ..Default::default()
        },
    )?;
    let cfg = LoaderConfig {
        batch_size: BATCH,
        shuffle: false,
        normalize: Some(Normalize::cifar10()),
        ..Default::default()
    };
    let mut loader = DataLoader::new(Arc::new(Synthetic::train(BATCH, 0)), cfg, &device)?;
    let batch = loader.epoch().next().context("one batch")??;
    let (images, labels) = (batch.images, batch.labels);
    let loss: ShardLoss =
        Arc::new(|logits, labels| cross_entropy(logits, labels, &Default::default()));

    let entries: Vec<Tensor> = vs
        .entries()
        .iter()
        .map(|e| e.var.as_tensor().clone())
        .collect();
    let params: Vec<Tensor> = vs
        .parameters()
        .iter()
        .map(|p| p.as_tensor().clone())
        .collect();
    let mut configs: Vec<(String, Config)> = vec![("plain".into(), Config::Plain)];
    for n in 1..=3 {
        let group = ReplicaGroup::new(&vs, build, &vec![device.clone(); n])?;
        configs.push((format!("group{n}"), Config::Group(group)));
    }
    for n in 2..=3 {
        let rig = CollectiveRig::new(n, &entries, &params)?;
        configs.push((format!("collectives{n}"), Config::Collectives(rig)));
    }

    let mut times: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    flambeau_kernels::runtime::on_worker(|| -> Result<()> {
        for round in 0..=rounds {
            for ((_, config), times) in configs.iter_mut().zip(&mut times) {
                for _ in 0..steps {
                    let t0 = Instant::now();
                    match config {
                        Config::Plain => {
                            let logits = model.forward_t(&images, true)?;
                            let l = (loss)(&logits, &labels)?;
                            l.to_scalar::<f32>()?;
                            let grads = l.backward()?;
                            opt.step(&grads)?;
                        }
                        Config::Group(group) => {
                            let out = group.step(&model, &images, &labels, &loss)?;
                            opt.step(&out.grads)?;
                        }
                        Config::Collectives(rig) => rig.step(&entries, &params)?,
                    }
                    if round > 0 {
                        times.push(t0.elapsed().as_secs_f64());
                    }
                }
            }
        }
        Ok(())
    })?;
    let fields: Vec<String> = configs
        .iter()
        .zip(times)
        .map(|((name, _), t)| {
            let (median, p10, p90) = stats(t);
            format!(r#""{name}":{{"median_s":{median},"p10_s":{p10},"p90_s":{p90}}}"#)
        })
        .collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        r#"{{"batch":{BATCH},"threads":{threads},"params":{},"param_bytes":{},{}}}"#,
        params.iter().map(|p| p.elem_count()).sum::<usize>(),
        entries
            .iter()
            .map(|p| p.elem_count() * p.dtype().size_in_bytes())
            .sum::<usize>(),
        fields.join(",")
    );
    Ok(())
}
