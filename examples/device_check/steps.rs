//! The training steps a check runs on each side: ResNet-18 steps with one optimizer or another,
//! steps fed by the data loader, and a small model through a `ReplicaGroup`.

use std::sync::Arc;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Module, ModuleT, Tensor};
use flambeau::nn::loss::{cross_entropy, CrossEntropyOptions};
use flambeau::nn::{Conv2d, Conv2dConfig, Linear};
use flambeau::optim::{clip_grad_norm, Adam, AdamConfig, Optimizer, ParamGroup, Sgd, SgdConfig};
use flambeau::parallel::{ReplicaGroup, ShardLoss};
use flambeau::vision::data::{DataLoader, Dataset, LoaderConfig, Normalize, Synthetic};
use flambeau::vision::models::{ResNet, ResNetConfig};
use flambeau::{LoadOptions, StateDict, Value, VarBuilder, VarStore};

use crate::compare::StepResult;

pub const BATCH: usize = 8;

/// Which optimizer a ResNet step takes.
#[derive(Clone, Copy, Debug)]
pub enum Opt {
    Sgd,
    Adam,
    /// AdamW after `clip_grad_norm(max_norm = 1)`.
    AdamWClip,
}

/// One ResNet-18 training step.
#[derive(Clone, Copy, Debug)]
pub struct ResNetStep {
    pub height: usize,
    pub width: usize,
    pub dtype: DType,
    pub label_smoothing: f64,
    pub opt: Opt,
    /// After the step, a forward in eval mode (running statistics) as `eval.logits`.
    pub eval_forward: bool,
}

impl ResNetStep {
    pub fn sgd(height: usize, width: usize) -> Self {
        Self {
            height,
            width,
            dtype: DType::F32,
            label_smoothing: 0.0,
            opt: Opt::Sgd,
            eval_forward: false,
        }
    }
}

fn initial_weights(dtype: DType) -> Result<StateDict> {
    let vs = VarStore::with_seed(&Device::Cpu, dtype, 7);
    ResNet::new(vs.root(), ResNetConfig::resnet18(10))?;
    Ok(vs.state_dict())
}

/// Deterministic inputs in [-1, 1) without depending on a device's random generator.
fn batch(h: usize, w: usize, dtype: DType, device: &Device) -> Result<(Tensor, Tensor)> {
    let n = BATCH * 3 * h * w;
    let x: Vec<f32> = (0..n)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
        .collect();
    let y: Vec<u32> = (0..BATCH as u32).map(|i| i * 3 % 10).collect();
    Ok((
        Tensor::from_vec(x, (BATCH, 3, h, w), device)?.to_dtype(dtype)?,
        Tensor::from_vec(y, BATCH, device)?,
    ))
}

fn sgd_config() -> SgdConfig {
    SgdConfig {
        lr: 0.05,
        momentum: 0.9,
        nesterov: true,
        weight_decay: 1e-4,
        ..Default::default()
    }
}

fn optimizer(opt: Opt, vs: &VarStore) -> Result<Box<dyn Optimizer>> {
    let groups = vec![ParamGroup::new(vs.parameters())];
    Ok(match opt {
        Opt::Sgd => Box::new(Sgd::new(groups, sgd_config())?),
        Opt::Adam => Box::new(Adam::new(
            groups,
            AdamConfig {
                lr: 1e-3,
                weight_decay: 1e-4,
                ..Default::default()
            },
        )?),
        Opt::AdamWClip => Box::new(Adam::adamw(
            groups,
            AdamConfig {
                lr: 1e-3,
                ..AdamConfig::adamw()
            },
        )?),
    })
}

/// Puts every tensor of an optimizer's `state_dict` into `out` as `opt.<path>`.
fn optimizer_state(v: &Value, path: &str, out: &mut StepResult) -> Result<()> {
    match v {
        Value::Tensor(t) => {
            out.insert(format!("opt{path}"), t.to_device(&Device::Cpu)?);
        }
        Value::Dict(d) => {
            for (k, v) in &d.entries {
                let key = k
                    .as_str()
                    .map(str::to_string)
                    .or_else(|| k.as_i64().map(|i| i.to_string()))
                    .unwrap_or_else(|| "?".into());
                optimizer_state(v, &format!("{path}.{key}"), out)?;
            }
        }
        Value::List(l) | Value::Tuple(l) => {
            for (i, v) in l.iter().enumerate() {
                optimizer_state(v, &format!("{path}.{i}"), out)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn record_params(vs: &VarStore, out: &mut StepResult) -> Result<()> {
    for (name, t) in vs.state_dict().iter() {
        out.insert(format!("after.{name}"), t.to_device(&Device::Cpu)?);
    }
    Ok(())
}

pub fn resnet_step(step: &ResNetStep, device: &Device) -> Result<StepResult> {
    let init = initial_weights(step.dtype)?;
    let vs = VarStore::new(device, step.dtype);
    let model = ResNet::new(vs.root(), ResNetConfig::resnet18(10))?;
    vs.load_state_dict(&init, &LoadOptions::default())?;
    let mut opt = optimizer(step.opt, &vs)?;
    let (x, y) = batch(step.height, step.width, step.dtype, device)?;
    let options = CrossEntropyOptions {
        label_smoothing: step.label_smoothing,
        ..Default::default()
    };
    let loss = cross_entropy(&model.forward_t(&x, true)?, &y, &options)?;
    let mut grads = loss.backward()?;
    let mut out = StepResult::new();
    out.insert("loss".into(), loss.to_device(&Device::Cpu)?);
    for (name, var) in vs.named_parameters() {
        let g = grads
            .get(var.as_tensor())
            .with_context(|| format!("no gradient for {name}"))?;
        out.insert(format!("grad.{name}"), g.to_device(&Device::Cpu)?);
    }
    if let Opt::AdamWClip = step.opt {
        let total = clip_grad_norm(&mut grads, &vs.parameters(), 1.0, 2.0)?;
        anyhow::ensure!(
            total > 1.0,
            "total norm {total} does not clip at max_norm 1"
        );
        out.insert("clip.total_norm".into(), Tensor::new(total, &Device::Cpu)?);
    }
    opt.step(&grads)?;
    record_params(&vs, &mut out)?;
    optimizer_state(&opt.state_dict(), "", &mut out)?;
    if step.eval_forward {
        let logits = model.forward_t(&x, false)?;
        out.insert("eval.logits".into(), logits.to_device(&Device::Cpu)?);
    }
    Ok(out)
}

const LOADER_STEPS: usize = 2;

fn loader_config() -> LoaderConfig {
    LoaderConfig {
        batch_size: BATCH,
        shuffle: true,
        seed: 5,
        normalize: Some(Normalize::cifar10()),
        ..Default::default()
    }
}

/// The loader's first batches, built here on the CPU from the dataset and the loader's order.
fn host_batches(dataset: &Synthetic) -> Result<Vec<(Tensor, Tensor)>> {
    let config = loader_config();
    let order = DataLoader::new(Arc::new(*dataset), config.clone(), &Device::Cpu)?.order(0);
    let norm = config.normalize.expect("normalised");
    (0..LOADER_STEPS)
        .map(|b| {
            let (mut pixels, mut labels) = (Vec::new(), Vec::new());
            let mut chw = (0, 0, 0);
            for &i in &order[b * BATCH..(b + 1) * BATCH] {
                let mut s = dataset.get(i)?;
                norm.apply(&mut s);
                chw = (s.channels, s.height, s.width);
                pixels.extend_from_slice(&s.pixels);
                labels.push(s.label);
            }
            Ok((
                Tensor::from_vec(pixels, (BATCH, chw.0, chw.1, chw.2), &Device::Cpu)?,
                Tensor::new(labels, &Device::Cpu)?,
            ))
        })
        .collect()
}

/// Two SGD steps at 32×32 on `Synthetic`: fed by a `DataLoader` on `device` (its prefetch
/// thread uploads) when `from_loader`, else by the same batches built on the CPU.
pub fn loader_steps(device: &Device, from_loader: bool) -> Result<StepResult> {
    let dataset = Synthetic::train(64, 3);
    let batches = if from_loader {
        let mut loader = DataLoader::new(Arc::new(dataset), loader_config(), device)?;
        let batches: Vec<_> = loader.epoch().take(LOADER_STEPS).collect();
        batches
            .into_iter()
            .map(|b| b.map(|b| (b.images, b.labels)))
            .collect::<flambeau::vision::Result<Vec<_>>>()?
    } else {
        host_batches(&dataset)?
    };
    let init = initial_weights(DType::F32)?;
    let vs = VarStore::new(device, DType::F32);
    let model = ResNet::new(vs.root(), ResNetConfig::resnet18(10))?;
    vs.load_state_dict(&init, &LoadOptions::default())?;
    let mut opt = optimizer(Opt::Sgd, &vs)?;
    let mut out = StepResult::new();
    for (i, (x, y)) in batches.iter().enumerate() {
        out.insert(format!("batch{i}.images"), x.to_device(&Device::Cpu)?);
        out.insert(format!("batch{i}.labels"), y.to_device(&Device::Cpu)?);
        let loss = cross_entropy(&model.forward_t(x, true)?, y, &Default::default())?;
        opt.step(&loss.backward()?)?;
        out.insert(format!("loss{i}"), loss.to_device(&Device::Cpu)?);
    }
    record_params(&vs, &mut out)?;
    Ok(out)
}

/// `fc(flatten(relu(conv(x))))`: no batch statistics, so any split of a batch gives the same
/// gradient.
pub struct Small {
    conv: Conv2d,
    fc: Linear,
}

impl ModuleT for Small {
    fn forward_t(&self, x: &Tensor, _train: bool) -> candle_core::Result<Tensor> {
        let h = self.conv.forward(x)?.relu()?;
        self.fc.forward(&h.flatten_from(1)?)
    }
}

const SMALL_SIZE: usize = 16;

fn build_small(vb: VarBuilder) -> flambeau::core::Result<Small> {
    let config = Conv2dConfig {
        stride: 2,
        padding: 1,
        ..Default::default()
    };
    Ok(Small {
        conv: Conv2d::new(vb.pp("conv"), 3, 8, 3, config)?,
        fc: Linear::new(
            vb.pp("fc"),
            8 * (SMALL_SIZE / 2) * (SMALL_SIZE / 2),
            10,
            true,
        )?,
    })
}

/// One step of `Small` through a `ReplicaGroup` of `replicas` replicas, all on `device`.
pub fn replica_step(device: &Device, replicas: usize) -> Result<StepResult> {
    let init = {
        let vs = VarStore::with_seed(&Device::Cpu, DType::F32, 11);
        build_small(vs.root())?;
        vs.state_dict()
    };
    let vs = VarStore::new(device, DType::F32);
    let model = build_small(vs.root())?;
    vs.load_state_dict(&init, &LoadOptions::default())?;
    let (x, y) = batch(SMALL_SIZE, SMALL_SIZE, DType::F32, device)?;
    let options = CrossEntropyOptions {
        label_smoothing: 0.1,
        ..Default::default()
    };
    let loss: ShardLoss = Arc::new(move |logits, labels| cross_entropy(logits, labels, &options));
    let mut group = ReplicaGroup::new(&vs, build_small, &vec![device.clone(); replicas])?;
    let step = group.step(&model, &x, &y, &loss)?;
    let mut out = StepResult::new();
    out.insert("loss".into(), step.loss.to_device(&Device::Cpu)?);
    out.insert("logits".into(), step.logits.to_device(&Device::Cpu)?);
    for (name, var) in vs.named_parameters() {
        let g = step
            .grads
            .get(var.as_tensor())
            .with_context(|| format!("no gradient for {name}"))?;
        out.insert(format!("grad.{name}"), g.to_device(&Device::Cpu)?);
    }
    Ok(out)
}
