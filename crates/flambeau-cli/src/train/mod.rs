//! `flambeau train`: the flags turned into a [`Trainer`] (model, data, recipe, run directory),
//! and what it reports turned into lines. The loop itself is flambeau-train's.

pub mod args;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use flambeau_parallel::{Launch, Placement, ReplicaGroup};
use flambeau_serialize::CheckpointManager;
use flambeau_train::recipe::SchedulerChoice;
use flambeau_train::{FitOutcome, Resume, StopReason, StopSignal, Trainer, TrainerConfig};
use flambeau_vision::data::DataOptions;
use flambeau_vision::models::{ResNet, ResNetCheckpoint, ResNetConfig};

use args::title;
pub use args::Args;

use crate::eval::{data_seed, resolve_arch};
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
    let placement = Placement::new(&args.device, args.replicas, args.batch_size, &launch)?;
    let device = placement.devices[0].clone();
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
    let config = ResNetConfig::by_name(&arch, num_classes)?;
    let (vs, net) = ResNet::seeded(config, &device, args.seed)?;
    let replicas = (placement.devices.len() > 1)
        .then(|| {
            let config = net.config().clone();
            let build = move |vb| ResNet::new(vb, config.clone());
            ReplicaGroup::with_backend(&vs, build, &placement.devices, placement.backend)
                .context("starting the data-parallel replicas")
        })
        .transpose()?;
    if let Some(path) = &args.init_from {
        init_from(&vs, path, &device)?;
    }

    let mut train = data.train_loader(args.batch_size, seed, &device)?;
    if world > 1 {
        train = train.sharded(rank, world)?;
    }
    let val = data.val_loader(args.batch_size, &device)?;
    let recipe = args.recipe(resumed.as_ref().map(|c| &c.checkpoint))?;
    let mut opt = recipe.build_optimizer(&vs)?;
    let sched = recipe.build_scheduler(train.len(), opt.as_mut())?;

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
        trainer = trainer.with_scheduler(sched, recipe.scheduler.steps_per_batch());
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
            recipe.scheduler != SchedulerChoice::Constant,
        )?),
        None => None,
    };
    if !trainer.is_main() {
        return Ok(trainer);
    }
    println!(
        "flambeau train: {description}; {} lr {}, {} schedule, batch {}, device {}; run directory {}",
        title(recipe.optimizer.name()),
        trainer.optimizer().lr(0), // the resumed optimizer's, when resuming
        title(recipe.scheduler.name()),
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

/// How long the processes of a launch wait for each other to start.
const RENDEZVOUS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

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
    if let Some(saved) = saved_arg("epochs").filter(|e| *e != args.epochs as i64 && has_schedule) {
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
