//! Your own training loop with resumable checkpoints: train a ResNet-18 on synthetic shapes, save
//! `<model, optimizer, scheduler, epoch>` after each epoch in the PyTorch tutorial's layout, and
//! when run again continue exactly where the last run stopped.
//!
//! Run: `cargo run --release --example checkpoint_resume -- [epochs=2] [run_dir=runs/example]`
//! (stop it with Ctrl-C after an epoch, or raise `epochs`, and run it again.)
//!
//! In PyTorch the files read back with the tutorial's recipe:
//! `ckpt = torch.load('runs/example/last.pth'); model.load_state_dict(ckpt['model_state_dict'])`.
//! `flambeau train` is this loop with mid-epoch saves, Ctrl-C handling, metrics and a CLI.

use std::sync::Arc;

use anyhow::Result;
use candle_core::{DType, Device, ModuleT};
use flambeau::nn::loss::cross_entropy;
use flambeau::optim::lr_scheduler::{LrScheduler, Scheduler, StepLr};
use flambeau::optim::{Optimizer, ParamGroup, Sgd, SgdConfig};
use flambeau::serialize::{Checkpoint, CheckpointManager};
use flambeau::vision::data::{DataLoader, LoaderConfig, LoaderState, Normalize, Synthetic};
use flambeau::vision::models::{ResNet, ResNetConfig};
use flambeau::{LoadConfig, LoadOptions, VarStore};

fn main() -> Result<()> {
    // Allocator and thread settings for training, then the loop inside rayon's pool.
    flambeau::kernels::runtime::configure_for_training();
    flambeau::kernels::runtime::on_worker(run)
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let epochs: i64 = args.first().map_or(Ok(2), |s| s.parse())?;
    let run_dir = args.get(1).map_or("runs/example", String::as_str);
    let device = Device::Cpu;

    // Build model, optimizer and scheduler first, then load their states: PyTorch's order.
    let vs = VarStore::with_seed(&device, DType::F32, 0);
    let model = ResNet::new(vs.root(), ResNetConfig::resnet18(10))?;
    let sgd = SgdConfig {
        lr: 0.02,
        momentum: 0.9,
        weight_decay: 5e-4,
        ..Default::default()
    };
    let mut opt = Sgd::new(vec![ParamGroup::new(vs.parameters())], sgd)?;
    let step_lr = StepLr {
        step_size: 1,
        gamma: 0.5,
    };
    let mut sched = Scheduler::new(step_lr, &mut opt)?;

    let runs = CheckpointManager::new(run_dir, 2)?;
    let mut first_epoch = 0;
    if let Some(last) = runs.latest() {
        let ckpt = Checkpoint::load(&last, &LoadConfig::default())?;
        vs.load_state_dict(&ckpt.model, &LoadOptions::default())?;
        if let Some(o) = &ckpt.optimizer {
            opt.load_state_dict(o)?;
        }
        if let Some(s) = &ckpt.scheduler {
            sched.load_state_dict(s)?;
        }
        first_epoch = ckpt.epoch + 1;
        println!(
            "resumed from {} at epoch {}",
            last.display(),
            first_epoch + 1
        );
    }

    let config = LoaderConfig {
        batch_size: 64,
        normalize: Some(Normalize::cifar10()),
        ..Default::default()
    };
    let mut train = DataLoader::new(Arc::new(Synthetic::train(1024, 0)), config, &device)?;
    for epoch in first_epoch..epochs {
        // The data order of every epoch depends only on (seed, epoch): resuming replays it.
        train.set_state(LoaderState {
            seed: 0,
            epoch: epoch as u64,
            batch: 0,
        });
        let mut last_loss = 0.0;
        for batch in train.epoch() {
            let batch = batch?;
            let loss = cross_entropy(
                &model.forward_t(&batch.images, true)?,
                &batch.labels,
                &Default::default(),
            )?;
            opt.step(&loss.backward()?)?;
            last_loss = loss.to_scalar::<f32>()? as f64;
        }
        sched.step(&mut opt)?;

        let mut ckpt = Checkpoint::new(vs.state_dict());
        ckpt.epoch = epoch;
        ckpt.optimizer = Some(opt.state_dict());
        ckpt.scheduler = Some(sched.state_dict());
        ckpt.loss = Some(last_loss);
        ckpt.extra.insert("arch", "resnet18");
        runs.save_epoch(&ckpt, false)?; // epoch-NNNN.pth + last.pth, atomically
        println!(
            "epoch {}/{epochs}: last batch loss {last_loss:.4}, lr now {} — saved {}",
            epoch + 1,
            opt.lr(0),
            runs.last_path().display()
        );
    }
    Ok(())
}
