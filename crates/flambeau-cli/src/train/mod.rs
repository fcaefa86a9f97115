//! `flambeau train`: the flags turned into a [`Trainer`] (model, data, recipe, run directory),
//! and what it reports turned into lines. The loop itself is flambeau-train's.

pub mod args;
mod recipe;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use flambeau_parallel::{process_device, Backend, Launch, ReplicaGroup};
use flambeau_serialize::CheckpointManager;
use flambeau_train::{FitOutcome, Resume, StopReason, StopSignal, Trainer, TrainerConfig};
use flambeau_vision::data::{DataLoader, LoaderConfig};
use flambeau_vision::models::{ResNet, ResNetCheckpoint};

pub use args::Args;
use args::{OptimizerKind, SchedulerKind};

use crate::data::DataOptions;
use crate::eval::{data_seed, resolve_arch};
use crate::model;
use crate::progress::Progress;

/// `flambeau train`.
pub fn run(args: &Args) -> Result<()> {
    let mut trainer = build(args)?;
    // Under a launcher, rank 0 speaks for the run; the others train quietly.
    let main = trainer.is_main();
    let mut progress = Progress::new(args.quiet || !main, "validate");
    let outcome = trainer.fit(&mut progress)?;
    if !main {
        return Ok(());
    }
    match outcome {
        FitOutcome::NothingToDo { epochs } => println!(
            "nothing to do: the run already has {epochs} epochs (raise --epochs to continue)"
        ),
        FitOutcome::Finished => print_summary(&trainer, args),
        FitOutcome::Stopped {
            reason,
            position,
            steps,
            checkpoint,
        } => {
            let why = match reason {
                StopReason::MaxSteps => format!("stopped after {steps} steps (--max-steps)"),
                StopReason::Interrupted if position.batch > 0 => format!(
                    "interrupted at epoch {}, batch {}",
                    position.epoch + 1,
                    position.batch
                ),
                StopReason::Interrupted => format!("interrupted after epoch {}", position.epoch),
            };
            println!(
                "{why}: checkpoint saved to {}; continue with --resume auto",
                checkpoint.display()
            );
            if reason == StopReason::Interrupted {
                std::process::exit(flambeau_train::INTERRUPTED_EXIT_CODE);
            }
        }
    }
    Ok(())
}

/// The run the flags describe, resumed when `--resume` names a checkpoint.
fn build(args: &Args) -> Result<Trainer<ResNet>> {
    let launch = Launch::detect()?;
    let (rank, world) = launch.rank_and_world();
    let placement = replica_devices(args, &launch)?;
    let device = placement[0].clone();
    let manager = CheckpointManager::new(&args.out, args.keep)
        .with_context(|| format!("preparing the run directory {}", args.out.display()))?;
    let resumed = open_resume(args, &manager, &device)?;
    let seed = resumed
        .as_ref()
        .and_then(|c| data_seed(&c.checkpoint))
        .unwrap_or(args.seed);
    let data = args.data.open(&DataOptions {
        train_size: args.train_size,
        val_size: args.val_size,
        image_size: args.image_size,
        seed,
    })?;
    let classes = data.train.classes().len();
    let (arch, num_classes) = match &resumed {
        Some(c) => (resolve_arch(args.arch.as_deref(), c)?, c.classes()?),
        None => (
            args.arch.clone().unwrap_or_else(|| "resnet18".into()),
            classes,
        ),
    };
    if num_classes != classes {
        bail!(
            "the checkpoint's classifier has {num_classes} outputs but the data has {classes} classes; to fine-tune it on this data start a new run with --init-from instead of --resume"
        );
    }
    let (vs, net) = model::build(&arch, num_classes, &device, args.seed)?;
    let replicas = (placement.len() > 1)
        .then(|| {
            let config = net.config().clone();
            // Several GPUs meet through NCCL; replicas sharing a device, through the host.
            let backend = match placement.iter().filter(|d| d.is_cuda()).count() {
                0 | 1 => Backend::Host,
                _ => nccl_backend(),
            };
            let build = move |vb| ResNet::new(vb, config.clone());
            ReplicaGroup::with_backend(&vs, build, &placement, backend)
                .context("starting the data-parallel replicas")
        })
        .transpose()?;
    if let Some(path) = &args.init_from {
        init_from(&vs, path, &device)?;
    }

    let loader_config = LoaderConfig {
        batch_size: args.batch_size,
        shuffle: true,
        drop_last: false,
        augment: Some(data.augment),
        normalize: Some(data.normalize),
        seed,
        prefetch: 2,
    };
    let val_config = LoaderConfig {
        shuffle: false,
        augment: None,
        ..loader_config.clone()
    };
    let mut train = DataLoader::new(data.train, loader_config, &device)?;
    if world > 1 {
        train = train.sharded(rank, world)?;
    }
    let val = DataLoader::new(data.val, val_config, &device)?;

    let saved = resumed.as_ref().map(|c| &c.checkpoint);
    let opt_kind = saved
        .and_then(|c| c.optimizer.as_ref())
        .map(recipe::optimizer_of)
        .or(args.optimizer)
        .unwrap_or(OptimizerKind::Sgd);
    let sched_kind = match saved {
        Some(c) => match &c.scheduler {
            Some(s) => recipe::scheduler_of(s)?,
            None if c.optimizer.is_some() => SchedulerKind::None,
            None => args.scheduler.unwrap_or(SchedulerKind::Cosine),
        },
        None => args.scheduler.unwrap_or(SchedulerKind::Cosine),
    };
    check_same("optimizer", args.optimizer, opt_kind)?;
    check_same("scheduler", args.scheduler, sched_kind)?;
    let mut opt = recipe::build_optimizer(opt_kind, &vs, args)?;
    let sched = recipe::build_scheduler(sched_kind, args, train.len(), opt.as_mut())?;

    let config = TrainerConfig {
        epochs: args.epochs,
        save_every: args.save_every,
        max_steps: args.max_steps,
        loss: flambeau_nn::loss::CrossEntropyOptions {
            label_smoothing: args.label_smoothing,
            ..Default::default()
        },
        write_metrics: true,
        overwrite: args.force,
    };
    let description = format!(
        "{arch} ({:.1} M parameters, {num_classes} classes) on {}",
        vs.parameters()
            .iter()
            .map(|p| p.elem_count())
            .sum::<usize>() as f64
            / 1e6,
        data.description
    );
    let mut trainer = Trainer::new(net, vs, opt, train, val, manager, config)
        .with_extra("arch", arch.as_str())
        .with_extra("args", args.to_value(world))
        .with_stop_signal(StopSignal::ctrl_c()?);
    if let Some(sched) = sched {
        trainer = trainer.with_scheduler(sched, recipe::steps_per_batch(sched_kind));
    }
    let replicas_line = replicas.as_ref().map(|g| {
        let shards: Vec<String> = g
            .shard_sizes(args.batch_size)
            .iter()
            .map(usize::to_string)
            .collect();
        let each = if args.device.contains(',') {
            format!("{} on each of {}", args.replicas, args.device)
        } else {
            format!("on {}", args.device)
        };
        format!(
            "data parallel: {} replicas {each}, per-replica batch {}; gradients summed on the first, checkpoints as from one device",
            g.len(),
            shards.join(", ")
        )
    });
    if let Some(group) = replicas {
        trainer = trainer.with_replicas(group);
    }
    let processes = launch
        .join(trainer.var_store(), RENDEZVOUS_TIMEOUT)
        .with_context(|| format!("joining the {} launch", launch.launcher()))?;
    let processes_line = processes.as_ref().map(|_| {
        format!(
            "distributed: {world} processes launched by {} (this is rank {rank}), per-process batch {}, global batch {}; rank 0 steps the optimizer and writes the run",
            launch.launcher(),
            args.batch_size,
            args.batch_size * world
        )
    });
    if let Some(group) = processes {
        trainer = trainer.with_process_group(group);
    }
    let resumed_line = match &resumed {
        Some(c) => Some(resume(
            &mut trainer,
            c,
            args,
            world,
            sched_kind != SchedulerKind::None,
        )?),
        None => None,
    };
    if !trainer.is_main() {
        return Ok(trainer);
    }
    println!(
        "flambeau train: {description}; {opt_kind:?} lr {}, {sched_kind:?} schedule, batch {}, device {}; run directory {}",
        trainer.optimizer().lr(0), // the resumed optimizer's, when resuming
        args.batch_size,
        args.device,
        trainer.manager().dir().display()
    );
    if let Some(line) = resumed_line {
        println!("{line}");
    }
    for line in [replicas_line, processes_line].into_iter().flatten() {
        println!("{line}");
    }
    Ok(trainer)
}

/// The backend between GPUs: NCCL when built in (`replica_devices` refuses several GPUs
/// otherwise).
fn nccl_backend() -> Backend {
    #[cfg(feature = "nccl")]
    return Backend::Nccl;
    #[cfg(not(feature = "nccl"))]
    Backend::Host
}

/// How long the processes of a launch wait for each other to start.
const RENDEZVOUS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// The device of every data-parallel replica: `--replicas` on each `--device`, the first one
/// holding the model, the data and the optimizer.
fn replica_devices(args: &Args, launch: &Launch) -> Result<Vec<Device>> {
    let devices = model::parse_devices(&args.device)?;
    if launch.rank_and_world().1 > 1 {
        if args.replicas > 1 || devices.len() > 1 {
            bail!(
                "launched by {}: each process trains one replica on one device (GPU processes use cuda:LOCAL_RANK); drop --replicas and list one device, and launch more processes instead",
                launch.launcher()
            );
        }
        return Ok(vec![process_device(launch, &devices[0])?]);
    }
    let gpus = devices.iter().filter(|d| d.is_cuda()).count();
    if gpus > 1 && !flambeau_parallel::NCCL_AVAILABLE {
        bail!(
            "--device {}: training on several GPUs at once needs NCCL, which this flambeau is built without; build with `--features nccl`, or train on one GPU (--device {}, with --replicas N for several replicas on it)",
            args.device,
            args.device.split(',').next().unwrap_or(&args.device)
        );
    }
    if gpus > 1 && args.replicas > 1 {
        bail!(
            "--device {} --replicas {}: NCCL runs one replica per GPU; drop --replicas (several replicas share one GPU only with --device cuda:N)",
            args.device,
            args.replicas
        );
    }
    let placement: Vec<Device> = devices
        .iter()
        .flat_map(|d| std::iter::repeat_n(d.clone(), args.replicas))
        .collect();
    if placement.len() > args.batch_size {
        bail!(
            "{} replicas for a batch of {}: every replica needs at least one sample of each batch; use --batch-size {} or more, or fewer replicas",
            placement.len(),
            args.batch_size,
            placement.len()
        );
    }
    Ok(placement)
}

/// The checkpoint `--resume` names, if any.
fn open_resume(
    args: &Args,
    manager: &CheckpointManager,
    device: &Device,
) -> Result<Option<ResNetCheckpoint>> {
    let Some(spec) = args.resume.as_deref() else {
        return Ok(None);
    };
    let resume: Resume = spec.parse()?;
    let Some(path) = resume.locate(manager) else {
        println!(
            "--resume auto: no checkpoint in {} yet, starting a new run",
            manager.dir().display()
        );
        return Ok(None);
    };
    let ckpt = ResNetCheckpoint::open(&path, device)
        .with_context(|| format!("--resume {}", path.display()))?;
    Ok(Some(ckpt))
}

/// Restores the run and returns the line that tells the user where it continues.
fn resume(
    trainer: &mut Trainer<ResNet>,
    c: &ResNetCheckpoint,
    args: &Args,
    world: usize,
    has_schedule: bool,
) -> Result<String> {
    let path = c.path.display();
    let r = trainer
        .resume(&c.checkpoint)
        .with_context(|| format!("--resume {path}"))?;
    let mut line = format!(
        "resumed from {path} ({}): epoch {} of {}, batch {}, step {}",
        c.checkpoint.layout.describe(),
        r.position.epoch + 1,
        args.epochs,
        r.position.batch,
        r.global_step
    );
    let saved_epochs = c
        .checkpoint
        .extra
        .get("args")
        .and_then(|a| a.get("epochs"))
        .and_then(|e| e.as_i64());
    let saved_arg = |flag: &str| {
        c.checkpoint
            .extra
            .get("args")
            .and_then(|a| a.get(flag))
            .and_then(|v| v.as_i64())
    };
    // The data position counts global batches: what must match is batch × processes.
    let saved_world = saved_arg("world_size").unwrap_or(1);
    if let Some(saved) = saved_arg("batch_size").map(|b| b * saved_world) {
        let now = (args.batch_size * world) as i64;
        if saved != now {
            line.push_str(&format!(
                "\nwarning: the run was started with a global batch of {saved} ({saved_world} process(es) × --batch-size {}), this command gives {now}: the data differs from the saved run's, so the continuation is not the run it would have been (keep processes × --batch-size = {saved} to continue it exactly)",
                saved / saved_world.max(1)
            ));
        }
    }
    for (flag, now) in [
        ("train_size", args.train_size as i64),
        ("val_size", args.val_size as i64),
        ("seed", args.seed as i64),
    ] {
        let saved = saved_arg(flag);
        if let Some(saved) = saved.filter(|s| *s != now) {
            let flag = flag.replace('_', "-");
            if flag == "seed" {
                line.push_str(&format!(
                    "\nnote: --seed {now} is ignored: a resumed run keeps its weights and its data order (seed {saved})"
                ));
                continue;
            }
            line.push_str(&format!(
                "\nwarning: the run was started with --{flag} {saved}, this command says {now}: the data differs from the saved run's, so the continuation is not the run it would have been (pass --{flag} {saved} to continue it exactly)"
            ));
        }
    }
    if let Some(saved) = saved_epochs.filter(|e| *e != args.epochs as i64 && has_schedule) {
        line.push_str(&format!(
            "\nnote: the learning-rate schedule was built for {saved} epochs and continues as saved; --epochs {} only changes where training stops",
            args.epochs
        ));
    }
    Ok(line)
}

fn print_summary(trainer: &Trainer<ResNet>, args: &Args) {
    let best = flambeau_train::history::best(trainer.history());
    if let Some(best) = best {
        println!(
            "done: {} epochs; best val acc {:.2}% at epoch {}; checkpoints, metrics.csv and metrics.png in {}",
            args.epochs,
            100.0 * best.val_acc,
            best.epoch,
            trainer.manager().dir().display()
        );
    }
}

/// An explicit flag that contradicts the checkpoint is an error, not silently ignored.
fn check_same<T: PartialEq + std::fmt::Debug>(
    what: &str,
    requested: Option<T>,
    actual: T,
) -> Result<()> {
    match requested {
        Some(r) if r != actual => bail!(
            "--{what} {r:?} was given, but the checkpoint continues a {actual:?} run; drop --{what} to resume it"
        ),
        _ => Ok(()),
    }
}

/// `--init-from`: every tensor whose name and shape match; the rest reported.
fn init_from(vs: &flambeau_core::VarStore, path: &std::path::Path, device: &Device) -> Result<()> {
    let context = || format!("--init-from {}", path.display());
    let ckpt = ResNetCheckpoint::open(path, device).with_context(context)?;
    let report = ckpt.init_into(vs).with_context(context)?;
    println!(
        "initialised {} of {} tensors from {}",
        report.loaded.len(),
        vs.state_dict().len(),
        path.display()
    );
    for m in &report.skipped_shape_mismatches {
        println!("  skipped {m} (kept the new model's initialisation)");
    }
    if !report.missing_keys.is_empty() {
        println!(
            "  not in the file (newly initialised): {}",
            report.missing_keys.join(", ")
        );
    }
    if !report.unexpected_keys.is_empty() {
        println!(
            "  ignored (not in the model): {}",
            report.unexpected_keys.join(", ")
        );
    }
    if report.loaded.is_empty() {
        bail!(
            "--init-from {}: no tensor matched the model's names; is it a torchvision ResNet of the same --arch?",
            path.display()
        );
    }
    Ok(())
}
