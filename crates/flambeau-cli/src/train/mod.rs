//! `flambeau train`: the whole job — model, data, optimizer, schedule, progress, metrics, and
//! checkpoints that resume bit for bit (and that PyTorch reads with the tutorial's recipe).

pub mod args;
mod history;
mod interrupt;
mod optim;
mod plot;
mod run_state;

use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{Device, ModuleT};
use flambeau_core::{LoadOptions, VarStore};
use flambeau_nn::loss::{accuracy, cross_entropy, CrossEntropyOptions};
use flambeau_optim::lr_scheduler::LrScheduler;
use flambeau_optim::Optimizer;
use flambeau_serialize::{Checkpoint, CheckpointManager, LoadConfig};
use flambeau_vision::data::{DataLoader, LoaderConfig, LoaderState};
use flambeau_vision::models::ResNet;

pub use args::Args;
use args::{OptimizerKind, SchedulerKind};
use history::{EpochProgress, EpochRecord};
use run_state::RunState;

use crate::data::DataOptions;
use crate::eval::{self, evaluate, progress_bar};
use crate::model;

/// Everything the loop works on: the data loaders beside the rest, so that a checkpoint can be
/// taken while an epoch's batches are being drawn.
struct Run {
    train: DataLoader,
    val: DataLoader,
    s: Session,
}

/// Model, optimizer, schedule, run directory and counters.
struct Session {
    args: Args,
    arch: String,
    vs: VarStore,
    model: ResNet,
    opt: Box<dyn Optimizer>,
    sched: Option<Box<dyn LrScheduler>>,
    sched_per_batch: bool,
    manager: CheckpointManager,
    state: RunState,
    loss_options: CrossEntropyOptions,
}

/// How an epoch's training pass ended.
enum PassEnd {
    /// Every batch was trained.
    Finished,
    /// Stopped early (Ctrl-C or --max-steps) after a checkpoint; the message says why.
    Stopped { message: String, exit_code: i32 },
}

/// `flambeau train`.
pub fn run(args: &Args) -> Result<()> {
    let mut run = Run::new(args.clone())?;
    if run.train.state().epoch >= run.s.args.epochs {
        println!(
            "nothing to do: the run already has {} epochs (raise --epochs to continue)",
            run.train.state().epoch
        );
        return Ok(());
    }
    interrupt::install();
    while run.train.state().epoch < run.s.args.epochs {
        match run.train_pass()? {
            PassEnd::Finished => run.finish_epoch()?,
            PassEnd::Stopped { message, exit_code } => {
                println!("{message}");
                std::process::exit(exit_code);
            }
        }
        let steps = run.s.state.global_step as u64;
        if run.s.args.max_steps.is_some_and(|m| steps >= m)
            && run.train.state().epoch < run.s.args.epochs
        {
            println!(
                "stopped after {steps} steps (--max-steps): checkpoint saved to {}; continue with --resume auto",
                run.s.manager.last_path().display()
            );
            return Ok(());
        }
        if interrupt::requested() {
            println!(
                "interrupted after epoch {}: checkpoint saved to {}; continue with --resume auto",
                run.train.state().epoch,
                run.s.manager.last_path().display()
            );
            std::process::exit(interrupt::EXIT_CODE);
        }
    }
    run.s.print_summary();
    Ok(())
}

impl Run {
    fn new(args: Args) -> Result<Self> {
        let device = model::parse_device(&args.device)?;
        let manager = CheckpointManager::new(&args.out, args.keep)
            .with_context(|| format!("preparing the run directory {}", args.out.display()))?;
        let resumed = load_resume(&args, &manager, &device)?;
        let seed = resumed
            .as_ref()
            .and_then(|(_, c)| eval::data_seed(c))
            .unwrap_or(args.seed);
        let data = args.data.open(&DataOptions {
            train_size: args.train_size,
            val_size: args.val_size,
            image_size: args.image_size,
            seed,
        })?;
        let classes = data.train.classes().len();

        let (arch, num_classes) = match &resumed {
            Some((_, ckpt)) => {
                let arch = eval::resolve_arch(args.arch.as_deref(), ckpt)?;
                let n = model::num_classes(&eval::unwrap(&ckpt.model)?)
                    .context("the checkpoint has no `fc.weight`: is it a torchvision ResNet?")?;
                (arch, n)
            }
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
        let (vs, model) = model::build(&arch, num_classes, &device, args.seed)?;
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
        let train = DataLoader::new(data.train, loader_config, &device)?;
        let val = DataLoader::new(data.val, val_config, &device)?;

        let opt_kind = resumed
            .as_ref()
            .and_then(|(_, c)| c.optimizer.as_ref())
            .map(optim::optimizer_kind_of)
            .or(args.optimizer)
            .unwrap_or(OptimizerKind::Sgd);
        let sched_kind = match &resumed {
            Some((_, c)) => match &c.scheduler {
                Some(s) => optim::scheduler_kind_of(s)?,
                None if c.optimizer.is_some() => SchedulerKind::None,
                None => args.scheduler.unwrap_or(SchedulerKind::Cosine),
            },
            None => args.scheduler.unwrap_or(SchedulerKind::Cosine),
        };
        check_same("optimizer", args.optimizer, opt_kind)?;
        check_same("scheduler", args.scheduler, sched_kind)?;
        let mut opt = optim::build_optimizer(opt_kind, &vs, &args)?;
        let mut sched = optim::build_scheduler(sched_kind, &args, train.len(), opt.as_mut())?;

        let mut run = Self {
            train,
            val,
            s: Session {
                sched_per_batch: optim::steps_per_batch(sched_kind),
                loss_options: CrossEntropyOptions {
                    label_smoothing: args.label_smoothing,
                    ..Default::default()
                },
                state: RunState::default(),
                arch,
                vs,
                model,
                opt,
                sched: None,
                manager,
                args,
            },
        };
        let resumed_line = match resumed {
            Some((path, ckpt)) => {
                let line = run.resume_from(&path, &ckpt, &mut sched)?;
                run.s.sched = sched;
                Some(line)
            }
            None => {
                run.s.sched = sched;
                run.train.set_state(LoaderState {
                    seed,
                    epoch: 0,
                    batch: 0,
                });
                None
            }
        };
        println!(
            "flambeau train: {} ({:.1} M parameters, {num_classes} classes) on {}; {:?} lr {}, {:?} schedule, batch {}, device {}; run directory {}",
            run.s.arch,
            run.s.vs.parameters().iter().map(|p| p.elem_count()).sum::<usize>() as f64 / 1e6,
            data.description,
            opt_kind,
            run.s.opt.lr(0), // the resumed optimizer's, when resuming
            sched_kind,
            run.s.args.batch_size,
            run.s.args.device,
            run.s.manager.dir().display()
        );
        if let Some(line) = resumed_line {
            println!("{line}");
        }
        Ok(run)
    }

    /// Restores model, optimizer, scheduler, data position and history (as PyTorch does:
    /// optimizer and scheduler are built first, then their states loaded). Returns the line that
    /// tells the user where the run continues.
    fn resume_from(
        &mut self,
        path: &std::path::Path,
        ckpt: &Checkpoint,
        sched: &mut Option<Box<dyn LrScheduler>>,
    ) -> Result<String> {
        let mut opts = LoadOptions::default();
        for rule in model::unwrap_rules(&ckpt.model) {
            opts = opts.rule(rule);
        }
        self.s
            .vs
            .load_state_dict(&ckpt.model, &opts)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("resuming the model from {}", path.display()))?;
        if let Some(o) = &ckpt.optimizer {
            self.s
                .opt
                .load_state_dict(o)
                .with_context(|| format!("resuming the optimizer from {}", path.display()))?;
        }
        if let (Some(s), Some(state)) = (sched.as_mut(), &ckpt.scheduler) {
            s.load_state_dict(state)
                .with_context(|| format!("resuming the scheduler from {}", path.display()))?;
        }
        let seed = self.train.state().seed;
        let position = run_state::loader_state(ckpt.data_state.as_ref()).unwrap_or(LoaderState {
            seed,
            epoch: (ckpt.epoch + 1).max(0) as u64,
            batch: 0,
        });
        if position.batch as usize >= self.train.len().max(1) {
            bail!(
                "{} stopped at batch {} of an epoch, but this data has {} batches per epoch: resume with the same --batch-size and data",
                path.display(),
                position.batch,
                self.train.len()
            );
        }
        let saved_epochs = ckpt
            .extra
            .get("args")
            .and_then(|a| a.get("epochs"))
            .and_then(|e| e.as_i64());
        let mut line = format!(
            "resumed from {} ({}): epoch {} of {}, batch {}, step {}",
            path.display(),
            ckpt.layout.describe(),
            position.epoch + 1,
            self.s.args.epochs,
            position.batch,
            ckpt.global_step
        );
        if let Some(saved) = saved_epochs.filter(|e| *e != self.s.args.epochs as i64) {
            if self.s.sched.is_some() || sched.is_some() {
                line.push_str(&format!(
                    "\nnote: the learning-rate schedule was built for {saved} epochs and continues as saved; --epochs {} only changes where training stops",
                    self.s.args.epochs
                ));
            }
        }
        self.train.set_state(position);
        self.s.state = RunState::from_checkpoint(ckpt, position);
        Ok(line)
    }

    /// Trains the rest of the current epoch.
    fn train_pass(&mut self) -> Result<PassEnd> {
        let start = self.train.state();
        let total = self.train.len() as u64;
        let bar = progress_bar(
            total,
            format!("epoch {}/{}", start.epoch + 1, self.s.args.epochs),
            self.s.args.quiet,
        );
        bar.set_position(start.batch);
        let mut batch_index = start.batch;
        let began = Instant::now();
        let seconds_before = self.s.state.progress.seconds;
        let mut stop: Option<(String, i32)> = None;
        for batch in self.train.epoch() {
            let batch = batch?;
            let logits = self.s.model.forward_t(&batch.images, true)?;
            let loss = cross_entropy(&logits, &batch.labels, &self.s.loss_options)?;
            let grads = loss.backward()?;
            self.s.opt.step(&grads)?;
            if self.s.sched_per_batch {
                if let Some(s) = self.s.sched.as_mut() {
                    s.step(self.s.opt.as_mut())?;
                }
            }
            let n = batch.indices.len() as f64;
            let loss = loss.to_scalar::<f32>()? as f64;
            let p = &mut self.s.state.progress;
            p.loss_sum += loss * n;
            p.correct += accuracy(&logits, &batch.labels)? * n;
            p.seen += n;
            p.seconds = seconds_before + began.elapsed().as_secs_f64();
            self.s.state.global_step += 1;
            self.s.state.last_loss = Some(loss);
            batch_index += 1;
            bar.set_position(batch_index);
            bar.set_message(format!(
                "loss {:.4} lr {:.5} {:.0} img/s",
                p.loss_sum / p.seen,
                self.s.opt.lr(0),
                p.seen / p.seconds.max(1e-9)
            ));
            if batch_index == total {
                break; // the end of the epoch is saved by finish_epoch
            }
            let step = self.s.state.global_step as u64;
            if interrupt::requested() {
                stop = Some((
                    format!(
                        "interrupted at epoch {}, batch {batch_index}",
                        start.epoch + 1
                    ),
                    interrupt::EXIT_CODE,
                ));
                break;
            }
            if self.s.args.max_steps.is_some_and(|m| step >= m) {
                stop = Some((format!("stopped after {step} steps (--max-steps)"), 0));
                break;
            }
            if self.s.args.save_every > 0 && step.is_multiple_of(self.s.args.save_every) {
                let position = LoaderState {
                    batch: batch_index,
                    ..start
                };
                self.s.manager.save_last(&self.s.checkpoint(position))?;
            }
        }
        bar.finish_and_clear();
        let Some((why, exit_code)) = stop else {
            return Ok(PassEnd::Finished);
        };
        let position = self.train.state();
        self.s.manager.save_last(&self.s.checkpoint(position))?;
        Ok(PassEnd::Stopped {
            message: format!(
                "{why}: checkpoint saved to {}; continue with --resume auto",
                self.s.manager.last_path().display()
            ),
            exit_code,
        })
    }

    /// Validation, scheduler step, history, checkpoints, metrics files, the epoch's line.
    fn finish_epoch(&mut self) -> Result<()> {
        let epoch = self.train.state().epoch - 1;
        let bar = progress_bar(self.val.len() as u64, "validate".into(), self.s.args.quiet);
        let v = evaluate(&self.s.model, &mut self.val, &bar)?;
        bar.finish_and_clear();
        if !self.s.sched_per_batch {
            if let Some(s) = self.s.sched.as_mut() {
                s.step(self.s.opt.as_mut())?;
            }
        }
        let p = self.s.state.progress;
        let record = EpochRecord {
            epoch: epoch + 1,
            train_loss: p.loss_sum / p.seen.max(1.0),
            train_acc: p.correct / p.seen.max(1.0),
            val_loss: v.loss,
            val_acc: v.accuracy,
            lr: self.s.opt.lr(0),
            seconds: p.seconds,
        };
        let is_best = self.s.state.best_metric.is_none_or(|b| v.accuracy > b);
        if is_best {
            self.s.state.best_metric = Some(v.accuracy);
        }
        self.s.state.history.push(record.clone());
        self.s.state.progress = EpochProgress::default();
        let position = self.train.state();
        self.s
            .manager
            .save_epoch(&self.s.checkpoint(position), is_best)
            .context("saving the epoch's checkpoint")?;
        let dir = self.s.manager.dir();
        history::write_csv(&dir.join("metrics.csv"), &self.s.state.history)?;
        plot::write_png(&dir.join("metrics.png"), &self.s.state.history)?;
        println!(
            "epoch {}/{}: train loss {:.4} acc {:.2}% | val loss {:.4} acc {:.2}%{} | lr {:.5} | {:.1} s, {:.0} img/s",
            record.epoch,
            self.s.args.epochs,
            record.train_loss,
            100.0 * record.train_acc,
            record.val_loss,
            100.0 * record.val_acc,
            if is_best { " (best)" } else { "" },
            record.lr,
            record.seconds,
            p.seen / record.seconds.max(1e-9)
        );
        Ok(())
    }
}

impl Session {
    /// The checkpoint of the run as it stands, with the data loader at `position`.
    fn checkpoint(&self, position: LoaderState) -> Checkpoint {
        let mut ckpt = Checkpoint::new(self.vs.state_dict());
        ckpt.optimizer = Some(self.opt.state_dict());
        ckpt.scheduler = self.sched.as_ref().map(|s| s.state_dict());
        ckpt.epoch = position.epoch as i64 - 1;
        ckpt.global_step = self.state.global_step;
        ckpt.loss = self.state.last_loss;
        ckpt.best_metric = self.state.best_metric;
        ckpt.data_state = Some(run_state::loader_state_value(position));
        ckpt.extra.insert("arch", self.arch.as_str());
        ckpt.extra.insert("args", run_state::args_value(&self.args));
        ckpt.extra
            .insert("history", history::to_value(&self.state.history));
        if position.batch > 0 {
            ckpt.extra
                .insert("epoch_progress", self.state.progress.to_value());
        }
        ckpt
    }

    fn print_summary(&self) {
        if let Some(best) = self
            .state
            .history
            .iter()
            .max_by(|a, b| a.val_acc.total_cmp(&b.val_acc))
        {
            println!(
                "done: {} epochs; best val acc {:.2}% at epoch {}; checkpoints, metrics.csv and metrics.png in {}",
                self.args.epochs,
                100.0 * best.val_acc,
                best.epoch,
                self.manager.dir().display()
            );
        }
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

/// The checkpoint `--resume` names, if any.
fn load_resume(
    args: &Args,
    manager: &CheckpointManager,
    device: &Device,
) -> Result<Option<(std::path::PathBuf, Checkpoint)>> {
    let path = match args.resume.as_deref() {
        None => return Ok(None),
        Some("auto") => match manager.latest() {
            Some(p) => p,
            None => {
                println!(
                    "--resume auto: no checkpoint in {} yet, starting a new run",
                    manager.dir().display()
                );
                return Ok(None);
            }
        },
        Some(p) => p.into(),
    };
    let ckpt = Checkpoint::load(
        &path,
        &LoadConfig {
            device: device.clone(),
        },
    )
    .with_context(|| format!("--resume {}", path.display()))?;
    Ok(Some((path, ckpt)))
}

/// `--init-from`: every tensor whose name and shape match; the rest reported.
fn init_from(vs: &VarStore, path: &std::path::Path, device: &Device) -> Result<()> {
    let ckpt = Checkpoint::load(
        path,
        &LoadConfig {
            device: device.clone(),
        },
    )
    .with_context(|| format!("--init-from {}", path.display()))?;
    let mut opts = LoadOptions::default()
        .strict(false)
        .skip_shape_mismatch(true);
    for rule in model::unwrap_rules(&ckpt.model) {
        opts = opts.rule(rule);
    }
    let report = vs
        .load_state_dict(&ckpt.model, &opts)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("--init-from {}", path.display()))?;
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
