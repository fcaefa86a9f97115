//! Fine-tune torchvision weights on your data: open the weights from any file PyTorch users have
//! (`.pth` zip or legacy, `.safetensors`, a DataParallel or `torch.compile` state dict, a whole
//! training checkpoint), get the ResNet they hold, give it a new head for your classes, and
//! train with checkpoints that resume exactly.
//!
//! Run: `cargo run --release --example finetune -- WEIGHTS [epochs=2] [run_dir=runs/finetune]`
//! with e.g. `torch.save(torchvision.models.resnet18(weights="DEFAULT").state_dict(), "resnet18.pth")`
//! (nothing is downloaded here). Run it again to continue the run; Ctrl-C stops with a checkpoint.

use std::sync::Arc;

use candle_core::{DType, Device};
use flambeau::optim::lr_scheduler::{Scheduler, StepLr};
use flambeau::optim::{ParamGroup, Sgd, SgdConfig};
use flambeau::train::{FitOutcome, Resume, StopSignal, Trainer, TrainerConfig};
use flambeau::vision::data::{Augment, DataLoader, Dataset, LoaderConfig, Normalize, Synthetic};
use flambeau::vision::models::{ResNet, ResNetCheckpoint};
use flambeau::{CheckpointManager, VarStore};

fn main() -> anyhow::Result<()> {
    flambeau::kernels::runtime::configure_for_training();
    flambeau::kernels::runtime::on_worker(run)
}

fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(weights) = args.first() else {
        eprintln!("usage: finetune WEIGHTS [epochs] [run_dir]");
        std::process::exit(2);
    };
    let epochs = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(2);
    let run_dir = args.get(2).map_or("runs/finetune", String::as_str);
    let device = Device::Cpu;

    // Your data (here the built-in synthetic shapes: 10 classes).
    let train_set = Arc::new(Synthetic::train(512, 0));
    let classes = train_set.classes().len();

    // The pretrained ResNet, recognised in the file; a new head for our classes; the backbone
    // loaded from the file (the old head, of another size, is skipped and reported).
    let pretrained = ResNetCheckpoint::open(weights, &device)?;
    let mut config = pretrained.config()?;
    config.num_classes = classes;
    let vs = VarStore::with_seed(&device, DType::F32, 0);
    let model = ResNet::new(vs.root(), config)?;
    let report = pretrained.init_into(&vs)?;
    println!(
        "{}: {} tensors loaded; new head: {}",
        weights,
        report.loaded.len(),
        report
            .skipped_shape_mismatches
            .iter()
            .map(|m| m.key.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );

    let mut opt = Sgd::new(
        vec![ParamGroup::new(vs.parameters())],
        SgdConfig {
            lr: 0.01,
            momentum: 0.9,
            weight_decay: 1e-4,
            ..Default::default()
        },
    )?;
    let sched = Scheduler::new(
        StepLr {
            step_size: 1,
            gamma: 0.5,
        },
        &mut opt,
    )?;
    let train_config = LoaderConfig {
        batch_size: 32,
        shuffle: true,
        augment: Some(Augment::default()),
        normalize: Some(Normalize::imagenet()),
        ..Default::default()
    };
    let val_config = LoaderConfig {
        shuffle: false,
        augment: None,
        ..train_config.clone()
    };
    let train = DataLoader::new(train_set, train_config, &device)?;
    let val = DataLoader::new(Arc::new(Synthetic::val(128, 0)), val_config, &device)?;

    let manager = CheckpointManager::new(run_dir, 2)?;
    let config = TrainerConfig {
        epochs,
        ..Default::default()
    };
    let mut trainer = Trainer::new(model, vs, Box::new(opt), train, val, manager, config)
        .with_scheduler(Box::new(sched), false)
        .with_stop_signal(StopSignal::ctrl_c()?);
    if let Some((path, ckpt)) = Resume::Auto.open(trainer.manager(), &device)? {
        trainer.resume(&ckpt)?;
        println!("continuing {}", path.display());
    }
    if let FitOutcome::Stopped { checkpoint, .. } = trainer.fit(&mut ())? {
        println!(
            "stopped; run again to continue from {}",
            checkpoint.display()
        );
    }
    for r in trainer.history() {
        println!(
            "epoch {}: val acc {:.1}%, lr {}",
            r.epoch,
            100.0 * r.val_acc,
            r.lr
        );
    }
    Ok(())
}
