//! Your own model, optimizer, scheduler and data in flambeau's training loop: a small CNN on the
//! synthetic shapes with checkpoints that resume mid-epoch bit for bit — no checkpoint fields
//! assigned by hand.
//!
//! Run: `cargo run --release --example custom_loop -- [epochs=3] [run_dir=runs/custom]`
//! Press Ctrl-C during an epoch: it saves `last.pth` after the current batch and stops; run it
//! again to continue exactly where it stopped. In PyTorch the files read back with the
//! tutorial's recipe: `torch.load('runs/custom/last.pth')['model_state_dict']`.

use std::sync::Arc;

use candle_core::{DType, Device, Module, ModuleT, Tensor};
use flambeau::nn::{Conv2d, Conv2dConfig, Linear};
use flambeau::optim::lr_scheduler::{CosineAnnealingLr, Scheduler};
use flambeau::optim::{Adam, AdamConfig, ParamGroup};
use flambeau::train::{BatchEnd, Callback, EpochEnd, FitOutcome, Resume, StopSignal, Trainer};
use flambeau::vision::data::{Augment, DataLoader, LoaderConfig, Normalize, Synthetic};
use flambeau::{CheckpointManager, VarBuilder, VarStore};

/// The user's model: any `ModuleT` whose parameters live in a `VarStore`.
struct SmallCnn {
    conv: Conv2d,
    fc: Linear,
}

impl SmallCnn {
    fn new(vb: VarBuilder) -> flambeau::core::Result<Self> {
        let conv = Conv2dConfig {
            stride: 2,
            padding: 1,
            ..Default::default()
        };
        Ok(Self {
            conv: Conv2d::new(vb.pp("conv"), 3, 16, 3, conv)?,
            fc: Linear::new(vb.pp("fc"), 16, 10, true)?,
        })
    }
}

impl ModuleT for SmallCnn {
    fn forward_t(&self, x: &Tensor, _train: bool) -> candle_core::Result<Tensor> {
        let x = self.conv.forward(x)?.relu()?.mean((2, 3))?;
        self.fc.forward(&x)
    }
}

/// Progress as plain lines (the `flambeau` command's bars are another such listener).
struct Lines;

impl Callback for Lines {
    fn on_batch_end(&mut self, b: &BatchEnd) {
        // The metrics stay on the device: read them (a wait for it) only when printing.
        if b.batch.is_multiple_of(8) {
            if let Ok(m) = b.read() {
                println!("  batch {}/{}: loss {:.4}", b.batch, b.batches, m.mean_loss);
            }
        }
    }

    fn on_epoch_end(&mut self, e: &EpochEnd) {
        let r = &e.record;
        println!(
            "epoch {}: train loss {:.4}, val acc {:.1}%{}",
            r.epoch,
            r.train_loss,
            100.0 * r.val_acc,
            if e.is_best { " (best)" } else { "" }
        );
    }
}

fn main() -> anyhow::Result<()> {
    flambeau::kernels::runtime::configure_for_training();
    flambeau::kernels::runtime::on_worker(run)
}

fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let epochs = args.first().and_then(|s| s.parse().ok()).unwrap_or(3);
    let run_dir = args.get(1).map_or("runs/custom", String::as_str);
    let device = Device::Cpu;

    // Model, optimizer and scheduler are built first; resuming loads their states (PyTorch's order).
    let vs = VarStore::with_seed(&device, DType::F32, 0);
    let model = SmallCnn::new(vs.root())?;
    let mut opt = Adam::adamw(
        vec![ParamGroup::new(vs.parameters())],
        AdamConfig {
            lr: 3e-3,
            ..AdamConfig::adamw()
        },
    )?;
    let cosine = CosineAnnealingLr {
        t_max: epochs as i64,
        eta_min: 0.0,
    };
    let sched = Scheduler::new(cosine, &mut opt)?;

    let train_config = LoaderConfig {
        batch_size: 32,
        shuffle: true,
        augment: Some(Augment::default()),
        normalize: Some(Normalize::cifar10()),
        seed: 0,
        ..Default::default()
    };
    let val_config = LoaderConfig {
        shuffle: false,
        augment: None,
        ..train_config.clone()
    };
    let train = DataLoader::new(Arc::new(Synthetic::train(1024, 0)), train_config, &device)?;
    let val = DataLoader::new(Arc::new(Synthetic::val(256, 0)), val_config, &device)?;

    let manager = CheckpointManager::new(run_dir, 2)?;
    let config = flambeau::train::TrainerConfig {
        epochs,
        save_every: 16, // also save last.pth every 16 steps
        ..Default::default()
    };
    let mut trainer = Trainer::new(model, vs, Box::new(opt), train, val, manager, config)
        .with_scheduler(Box::new(sched), false)
        .with_stop_signal(StopSignal::ctrl_c()?);
    if let Some((path, ckpt)) = Resume::Auto.open(trainer.manager(), &device)? {
        let at = trainer.resume(&ckpt)?.position;
        println!(
            "resumed from {}: epoch {}, batch {}",
            path.display(),
            at.epoch + 1,
            at.batch
        );
    }
    match trainer.fit(&mut Lines)? {
        FitOutcome::Stopped { checkpoint, .. } => {
            println!(
                "stopped; run again to continue from {}",
                checkpoint.display()
            )
        }
        FitOutcome::NothingToDo { epochs } => println!("the run already has {epochs} epochs"),
        FitOutcome::Finished => println!("done; metrics.csv and metrics.png in {run_dir}"),
    }
    Ok(())
}
