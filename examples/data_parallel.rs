//! Data parallelism with PyTorch's semantics, through the facade:
//! 1. `DataParallel` around a model — a forward over several replicas equals the model's own,
//!    and its state dict has the `module.` keys `nn.DataParallel` saves (written to a `.pth`
//!    that PyTorch's `nn.DataParallel` loads as is);
//! 2. the `Trainer` over a `ReplicaGroup` of CPU replicas: each batch split as `torch.chunk`
//!    splits it, batch norm per shard, one optimizer on the whole batch's gradient, and
//!    checkpoints with plain keys that resume on any number of replicas.
//!
//! Run: `cargo run --release --example data_parallel -- [replicas=2] [run_dir=runs/data-parallel]`
//! (on a GPU, open it with `flambeau::kernels::device::open_cuda(0)`: the `ReplicaGroup` part then
//! takes that device N times; `DataParallel` takes at most one GPU entry, see its docs.)

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, ModuleT, Tensor};
use flambeau::parallel::{DataParallel, ReplicaGroup};
use flambeau::train::{FitOutcome, Resume, Trainer, TrainerConfig};
use flambeau::vision::data::{DataLoader, LoaderConfig, Normalize, Synthetic};
use flambeau::vision::models::{ResNet, ResNetConfig};
use flambeau::{CheckpointManager, VarBuilder, VarStore};

/// How every replica is built: the same constructor as the base model.
fn build(vb: VarBuilder) -> flambeau::vision::Result<ResNet> {
    ResNet::new(vb, ResNetConfig::resnet18(10))
}

fn main() -> anyhow::Result<()> {
    flambeau::kernels::runtime::configure_for_training();
    flambeau::kernels::runtime::on_worker(run)
}

fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let replicas: usize = args.first().and_then(|s| s.parse().ok()).unwrap_or(2);
    let run_dir = args.get(1).map_or("runs/data-parallel", String::as_str);
    let devices = vec![Device::Cpu; replicas];

    // 1. DataParallel: the forward over the replicas, the `module.` keys.
    let vs = VarStore::with_seed(&Device::Cpu, DType::F32, 0);
    let dp = DataParallel::new(build(vs.root())?, vs, build, &devices)?;
    let x = Tensor::randn(0f32, 1.0, (6, 3, 32, 32), &Device::Cpu)?;
    let alone = dp.module().forward_t(&x, false)?;
    let spread = dp.forward_t(&x, false)?;
    let diff = (alone - spread)?.abs()?.max_all()?.to_scalar::<f32>()?;
    println!("DataParallel over {replicas} replicas: largest difference to one device {diff:e}");
    std::fs::create_dir_all(run_dir)?;
    let file = Path::new(run_dir).join("data_parallel.pth");
    flambeau::serialize::save_state_dict(&dp.state_dict(), &file)?;
    println!(
        "wrote {} (keys like {}): nn.DataParallel(model).load_state_dict(torch.load(…)) takes it",
        file.display(),
        dp.state_dict().keys().next().unwrap_or_default()
    );

    // 2. The Trainer over a ReplicaGroup.
    let vs = VarStore::with_seed(&Device::Cpu, DType::F32, 0);
    let model = build(vs.root())?;
    let group = ReplicaGroup::new(&vs, build, &devices)?;
    let opt = flambeau::optim::Sgd::new(
        vec![flambeau::optim::ParamGroup::new(vs.parameters())],
        flambeau::optim::SgdConfig {
            lr: 0.02,
            momentum: 0.9,
            nesterov: true,
            ..Default::default()
        },
    )?;
    let loader = LoaderConfig {
        batch_size: 32,
        normalize: Some(Normalize::cifar10()),
        ..Default::default()
    };
    let train = DataLoader::new(
        Arc::new(Synthetic::train(512, 0)),
        loader.clone(),
        &Device::Cpu,
    )?;
    let val = DataLoader::new(Arc::new(Synthetic::val(128, 0)), loader, &Device::Cpu)?;
    let config = TrainerConfig {
        epochs: 2,
        ..Default::default()
    };
    let manager = CheckpointManager::new(Path::new(run_dir).join("run"), 2)?;
    let mut trainer =
        Trainer::new(model, vs, Box::new(opt), train, val, manager, config).with_replicas(group);
    if let Some((path, ckpt)) = Resume::Auto.open(trainer.manager(), &Device::Cpu)? {
        trainer.resume(&ckpt)?;
        println!("resumed from {} (any replica count can)", path.display());
    }
    println!(
        "training over {} replicas, per-replica batch {:?}",
        replicas,
        trainer.replicas().map(|g| g.shard_sizes(32))
    );
    match trainer.fit(&mut ())? {
        FitOutcome::NothingToDo { epochs } => println!("the run already has {epochs} epochs"),
        _ => {
            let last = trainer.history().last().map(|r| r.val_acc).unwrap_or(0.0);
            println!(
                "done: val acc {:.1}%; checkpoints in {run_dir}/run",
                100.0 * last
            );
        }
    }
    Ok(())
}
