//! [`Trainer`]: the loop of `flambeau train` for any model — fit, validate, checkpoint, resume
//! mid-epoch bit for bit, stop on request.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{ModuleT, Tensor};
use flambeau_core::{Value, VarStore};
use flambeau_nn::loss::{correct_predictions, cross_entropy, CrossEntropyOptions};
use flambeau_optim::lr_scheduler::LrScheduler;
use flambeau_optim::Optimizer;
use flambeau_parallel::{ProcessGroup, ReplicaGroup, ShardLoss};
use flambeau_serialize::{Checkpoint, CheckpointManager};
use flambeau_vision::data::{Batch, DataLoader, LoaderState};

use crate::callback::{BatchEnd, EpochEnd};
use crate::history::{self, EpochProgress, EpochRecord};
use crate::run_state::{RunState, KEY_EPOCH_PROGRESS, KEY_HISTORY};
use crate::running::RunningMetrics;
use crate::{evaluate, plot, Callback, Error, Evaluation, Result, StopSignal};

/// How long to train and how often to save.
#[derive(Debug, Clone)]
pub struct TrainerConfig {
    /// Total epochs of the run (a resumed run continues up to this many).
    pub epochs: u64,
    /// Also save `last.pth` every this many optimizer steps (0: only at the end of each epoch).
    pub save_every: u64,
    /// Stop (with a checkpoint) once this many optimizer steps have been taken in total.
    pub max_steps: Option<u64>,
    /// The cross-entropy loss's options (label smoothing, …).
    pub loss: CrossEntropyOptions,
    /// Write `metrics.csv` and `metrics.png` into the run directory after every epoch.
    pub write_metrics: bool,
    /// Let a new (not resumed) run write into a directory that already holds a run, replacing
    /// its checkpoints and metrics. Off by default: [`Trainer::fit`] refuses instead.
    pub overwrite: bool,
}

impl Default for TrainerConfig {
    fn default() -> Self {
        Self {
            epochs: 1,
            save_every: 0,
            max_steps: None,
            loss: CrossEntropyOptions::default(),
            write_metrics: true,
            overwrite: false,
        }
    }
}

/// Why [`Trainer::fit`] stopped before the last epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The [`StopSignal`] was requested (e.g. Ctrl-C).
    Interrupted,
    /// [`TrainerConfig::max_steps`] was reached.
    MaxSteps,
}

/// How [`Trainer::fit`] ended.
#[derive(Debug, Clone, PartialEq)]
pub enum FitOutcome {
    /// The run already had all its epochs; nothing was trained.
    NothingToDo {
        /// Finished epochs.
        epochs: u64,
    },
    /// Every epoch was trained.
    Finished,
    /// Stopped early after saving `last.pth`.
    Stopped {
        /// Why.
        reason: StopReason,
        /// Where the data loader stands: `batch > 0` mid-epoch, else after epoch `epoch`.
        position: LoaderState,
        /// Optimizer steps taken in total.
        steps: u64,
        /// The checkpoint to resume from.
        checkpoint: PathBuf,
    },
}

/// Where a resumed run continues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resumed {
    /// The data loader's position (epoch 0-based; batch within it).
    pub position: LoaderState,
    /// Optimizer steps taken before.
    pub global_step: i64,
}

/// A training run: the user's model and its [`VarStore`], optimizer, optional scheduler, data,
/// and the run directory's [`CheckpointManager`].
pub struct Trainer<M> {
    model: M,
    /// What a checkpoint holds, apart from the data loaders (so that the loop can save while
    /// it draws batches).
    s: Session,
    scheduler_per_batch: bool,
    train: DataLoader,
    val: DataLoader,
    manager: CheckpointManager,
    config: TrainerConfig,
    stop: StopSignal,
    /// Whether [`Trainer::resume`] continued a saved run.
    resumed: bool,
    /// How the work is spread: one device, replicas in this process, or processes.
    parallel: Parallelism,
}

/// Where the steps of a run are computed.
enum Parallelism {
    /// The model alone.
    None,
    /// Data-parallel replicas in this process (rank 0 being the model itself).
    Replicas(ReplicaGroup),
    /// This process is one rank of a multi-process run.
    Processes(ProcessGroup),
}

/// One training step's contribution to the epoch's metrics, on the device (never read here).
enum StepMetrics {
    /// One process: the step's mean loss and correct count (f64 scalars) over `samples`.
    Local {
        loss: Tensor,
        correct: Tensor,
        samples: f64,
    },
    /// A multi-process step: `[loss × samples, correct, samples]` summed over the ranks, and
    /// whether to stop after it, as every rank agreed (`None`: not a step the ranks stop after).
    Group { sums: Tensor, stop: Option<bool> },
}

/// The parts of a run a checkpoint is made of, besides the data position.
struct Session {
    vs: VarStore,
    optimizer: Box<dyn Optimizer>,
    scheduler: Option<Box<dyn LrScheduler>>,
    state: RunState,
    extra: Vec<(String, Value)>,
}

impl<M: ModuleT> Trainer<M> {
    /// A new run at the train loader's current position (epoch 0 for a fresh loader).
    pub fn new(
        model: M,
        vs: VarStore,
        optimizer: Box<dyn Optimizer>,
        train: DataLoader,
        val: DataLoader,
        manager: CheckpointManager,
        config: TrainerConfig,
    ) -> Self {
        Self {
            model,
            s: Session {
                vs,
                optimizer,
                scheduler: None,
                state: RunState::default(),
                extra: Vec::new(),
            },
            scheduler_per_batch: false,
            train,
            val,
            manager,
            config,
            stop: StopSignal::new(),
            resumed: false,
            parallel: Parallelism::None,
        }
    }

    /// Trains data-parallel over `replicas` (built on this trainer's model and store: rank 0
    /// is the model itself): every batch is split over them as `torch.chunk` splits it, and
    /// the one optimizer steps with the whole batch's gradient. Checkpoints hold rank 0's
    /// model with plain keys, so a run resumes on any number of replicas.
    pub fn with_replicas(mut self, replicas: ReplicaGroup) -> Self {
        self.parallel = Parallelism::Replicas(replicas);
        self
    }

    /// Trains as one rank of a multi-process run (torchrun, mpirun): the train loader should be
    /// [sharded](DataLoader::sharded) for this rank. Every rank computes its part of each step;
    /// rank 0 alone steps the optimizer, validates, and writes checkpoints and metrics; all
    /// ranks stop after the same step. Every rank resumes from the same checkpoint.
    pub fn with_process_group(mut self, group: ProcessGroup) -> Self {
        self.parallel = Parallelism::Processes(group);
        self
    }

    /// The data-parallel replicas, if the run has them.
    pub fn replicas(&self) -> Option<&ReplicaGroup> {
        match &self.parallel {
            Parallelism::Replicas(g) => Some(g),
            _ => None,
        }
    }

    /// This process's rank, if it is one of a multi-process run.
    pub fn process_group(&self) -> Option<&ProcessGroup> {
        match &self.parallel {
            Parallelism::Processes(g) => Some(g),
            _ => None,
        }
    }

    /// Whether this process writes the run's files: always, except on the ranks other than 0
    /// of a multi-process run.
    pub fn is_main(&self) -> bool {
        match &self.parallel {
            Parallelism::Processes(g) => g.is_main(),
            _ => true,
        }
    }

    /// Adds a learning-rate scheduler, stepped after every batch when `per_batch` (OneCycleLR)
    /// or after every epoch (the others), as PyTorch's recipes do.
    pub fn with_scheduler(mut self, scheduler: Box<dyn LrScheduler>, per_batch: bool) -> Self {
        self.s.scheduler = Some(scheduler);
        self.scheduler_per_batch = per_batch;
        self
    }

    /// Adds a top-level entry to every checkpoint (e.g. `arch`, `args`), before the history.
    pub fn with_extra(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.s.extra.push((key.into(), value.into()));
        self
    }

    /// Stops (with a checkpoint) after the batch during which `stop` is requested;
    /// [`StopSignal::ctrl_c`] makes Ctrl-C do it.
    pub fn with_stop_signal(mut self, stop: StopSignal) -> Self {
        self.stop = stop;
        self
    }

    /// Continues the run `ckpt` saved: model, optimizer, scheduler (built first, then their
    /// states loaded, as in PyTorch), data position, counters and metrics history. Checkpoints
    /// without a data position (e.g. PyTorch's) continue at the start of `epoch + 1`.
    pub fn resume(&mut self, ckpt: &Checkpoint) -> Result<Resumed> {
        self.resumed = true;
        self.s
            .vs
            .load_state_dict(&ckpt.model.strip_wrappers(), &Default::default())
            .map_err(Error::ResumeModel)?;
        if let Some(o) = &ckpt.optimizer {
            self.s
                .optimizer
                .load_state_dict(o)
                .map_err(|source| Error::ResumeState {
                    what: "optimizer",
                    source,
                })?;
        }
        if let (Some(s), Some(state)) = (self.s.scheduler.as_mut(), &ckpt.scheduler) {
            s.load_state_dict(state)
                .map_err(|source| Error::ResumeState {
                    what: "scheduler",
                    source,
                })?;
        }
        let seed = self.train.state().seed;
        let position = ckpt
            .data_state
            .as_ref()
            .and_then(LoaderState::from_value)
            .unwrap_or(LoaderState {
                seed,
                epoch: (ckpt.epoch + 1).max(0) as u64,
                batch: 0,
            });
        if position.batch as usize >= self.train.len().max(1) {
            return Err(Error::BatchOutOfRange {
                batch: position.batch,
                batches: self.train.len(),
            });
        }
        self.train.set_state(position);
        self.s.state = RunState::from_checkpoint(ckpt, position);
        Ok(Resumed {
            position,
            global_step: ckpt.global_step,
        })
    }

    /// Trains up to [`TrainerConfig::epochs`]: every epoch is validated and checkpointed
    /// (`last.pth`, `epoch-NNNN.pth`, `best.pth` when best), and its metrics written; a stop
    /// request or `max_steps` saves `last.pth` and returns [`FitOutcome::Stopped`].
    pub fn fit(&mut self, callback: &mut dyn Callback) -> Result<FitOutcome> {
        if self.is_main() && !self.resumed && !self.config.overwrite {
            let dir = self.manager.dir();
            if let Some(found) = self.manager.run_files().into_iter().next().or_else(|| {
                let csv = dir.join(METRICS_CSV);
                csv.is_file().then_some(csv)
            }) {
                return Err(Error::ExistingRun {
                    dir: dir.to_path_buf(),
                    found,
                });
            }
        }
        let epochs = self.config.epochs;
        if self.train.state().epoch >= epochs {
            return Ok(FitOutcome::NothingToDo {
                epochs: self.train.state().epoch,
            });
        }
        while self.train.state().epoch < epochs {
            if let Some(reason) = self.train_pass(callback)? {
                return Ok(self.stopped(reason));
            }
            self.finish_epoch(callback)?;
            let max_steps_reached = self
                .config
                .max_steps
                .is_some_and(|m| self.global_step() >= m);
            let more = self.train.state().epoch < epochs;
            if more && max_steps_reached {
                return Ok(self.stopped(StopReason::MaxSteps));
            }
            if more && self.agreed_stop()? {
                return Ok(self.stopped(StopReason::Interrupted));
            }
        }
        Ok(FitOutcome::Finished)
    }

    /// Validation loss and accuracy of the model as it stands.
    pub fn evaluate(&mut self, callback: &mut dyn Callback) -> Result<Evaluation> {
        evaluate(&self.model, &mut self.val, callback)
    }

    /// The checkpoint of the run as it stands.
    pub fn checkpoint(&self) -> Checkpoint {
        self.s.checkpoint(self.train.state())
    }

    /// The model.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The store of the model's parameters and buffers.
    pub fn var_store(&self) -> &VarStore {
        &self.s.vs
    }

    /// The optimizer.
    pub fn optimizer(&self) -> &dyn Optimizer {
        self.s.optimizer.as_ref()
    }

    /// The run directory's checkpoint manager.
    pub fn manager(&self) -> &CheckpointManager {
        &self.manager
    }

    /// Metrics of the finished epochs.
    pub fn history(&self) -> &[EpochRecord] {
        &self.s.state.history
    }

    /// Where the training data loader stands.
    pub fn position(&self) -> LoaderState {
        self.train.state()
    }

    /// Batches per training epoch.
    pub fn batches_per_epoch(&self) -> usize {
        self.train.len()
    }

    /// Optimizer steps since the start of the run.
    pub fn global_step(&self) -> u64 {
        self.s.state.global_step.max(0) as u64
    }

    /// The configuration.
    pub fn config(&self) -> &TrainerConfig {
        &self.config
    }

    /// Whether to stop: this process's request, or any rank's in a multi-process run (every
    /// rank asks at the same point).
    fn agreed_stop(&mut self) -> Result<bool> {
        let local = self.stop.requested();
        Ok(match &mut self.parallel {
            Parallelism::Processes(g) => g.any(local)?,
            _ => local,
        })
    }

    fn stopped(&self, reason: StopReason) -> FitOutcome {
        FitOutcome::Stopped {
            reason,
            position: self.train.state(),
            steps: self.global_step(),
            checkpoint: self.manager.last_path(),
        }
    }

    /// Trains the rest of the current epoch; `Some` when stopped early (after saving).
    fn train_pass(&mut self, callback: &mut dyn Callback) -> Result<Option<StopReason>> {
        let start = self.train.state();
        let total = self.train.len() as u64;
        callback.on_train_begin(start.epoch + 1, self.config.epochs, start.batch, total);
        let mut batch_index = start.batch;
        let began = Instant::now();
        let seconds_before = self.s.state.progress.seconds;
        let mut stop = None;
        let options = self.config.loss;
        let shard_loss: ShardLoss =
            std::sync::Arc::new(move |logits, labels| cross_entropy(logits, labels, &options));
        let main = self.is_main();
        let mut running = RunningMetrics::new(&self.s.state.progress, self.s.vs.device())?;
        for batch in self.train.epoch() {
            let batch = batch?;
            let m = train_step(
                &self.model,
                &mut self.s,
                &mut self.parallel,
                &batch,
                &shard_loss,
                self.stop.requested(),
            )?;
            if self.scheduler_per_batch {
                if let Some(s) = self.s.scheduler.as_mut() {
                    s.step(self.s.optimizer.as_mut())?;
                }
            }
            // The step's metrics are added on the device; nothing is read back here.
            let agreed_stop = match m {
                StepMetrics::Local {
                    loss,
                    correct,
                    samples,
                } => {
                    let n = Tensor::full(samples, (), loss.device())?;
                    running.add(&loss, &correct, &n)?;
                    None
                }
                StepMetrics::Group { sums, stop } => {
                    let mean = RunningMetrics::mean_of(&sums)?;
                    running.add_sums(&sums, mean)?;
                    Some(stop.unwrap_or(false))
                }
            };
            self.s.state.progress.seconds = seconds_before + began.elapsed().as_secs_f64();
            self.s.state.global_step += 1;
            batch_index += 1;
            callback.on_batch_end(&BatchEnd {
                batch: batch_index,
                batches: total,
                lr: self.s.optimizer.lr(0),
                seconds: self.s.state.progress.seconds,
                metrics: running.clone(),
            });
            if batch_index == total {
                break; // the end of the epoch is saved by finish_epoch
            }
            let step = self.s.state.global_step as u64;
            if agreed_stop.unwrap_or_else(|| self.stop.requested()) {
                stop = Some(StopReason::Interrupted);
                break;
            }
            if self.config.max_steps.is_some_and(|m| step >= m) {
                stop = Some(StopReason::MaxSteps);
                break;
            }
            if main && self.config.save_every > 0 && step.is_multiple_of(self.config.save_every) {
                let position = LoaderState {
                    batch: batch_index,
                    ..start
                };
                self.s.settle(&running)?;
                self.manager
                    .save_last(&self.s.checked_checkpoint(position)?)?;
            }
        }
        // The epoch pass's one read of its sums (besides the saves' and the listener's).
        self.s.settle(&running)?;
        callback.on_train_end();
        if main && stop.is_some() {
            let position = self.train.state();
            self.manager
                .save_last(&self.s.checked_checkpoint(position)?)?;
        }
        Ok(stop)
    }

    /// Validation, scheduler step, history, checkpoints, metrics files.
    fn finish_epoch(&mut self, callback: &mut dyn Callback) -> Result<()> {
        let epoch = self.train.state().epoch - 1;
        if !self.scheduler_per_batch {
            if let Some(s) = self.s.scheduler.as_mut() {
                s.step(self.s.optimizer.as_mut())?;
            }
        }
        if !self.is_main() {
            // Rank 0 validates and writes; the others go on to the next epoch's first step.
            self.s.state.progress = EpochProgress::default();
            return Ok(());
        }
        let v = evaluate(&self.model, &mut self.val, callback)?;
        let p = self.s.state.progress;
        let record = EpochRecord {
            epoch: epoch + 1,
            train_loss: p.loss_sum / p.seen.max(1.0),
            train_acc: p.correct / p.seen.max(1.0),
            val_loss: v.loss,
            val_acc: v.accuracy,
            lr: self.s.optimizer.lr(0),
            seconds: p.seconds,
        };
        let is_best = history::improves(v.accuracy, self.s.state.best_metric);
        if is_best {
            self.s.state.best_metric = Some(v.accuracy);
        }
        self.s.state.history.push(record.clone());
        self.s.state.progress = EpochProgress::default();
        let position = self.train.state();
        self.manager
            .save_epoch(&self.s.checked_checkpoint(position)?, is_best)?;
        if self.config.write_metrics {
            let dir = self.manager.dir();
            history::write_csv(&dir.join(METRICS_CSV), &self.s.state.history)?;
            plot::write_png(&dir.join("metrics.png"), &self.s.state.history)?;
        }
        callback.on_epoch_end(&EpochEnd {
            record,
            is_best,
            images: p.seen,
        });
        Ok(())
    }
}

/// One optimizer step on `batch`, computed as `parallel` says.
fn train_step<M: ModuleT>(
    model: &M,
    s: &mut Session,
    parallel: &mut Parallelism,
    batch: &Batch,
    shard_loss: &ShardLoss,
    stop_requested: bool,
) -> Result<StepMetrics> {
    let n = batch.indices.len() as f64;
    let (logits, loss) = match parallel {
        Parallelism::Processes(group) => {
            let out = group.step(
                model,
                &batch.images,
                &batch.labels,
                shard_loss,
                stop_requested,
            )?;
            if let Some(grads) = &out.grads {
                s.optimizer.step(grads)?;
            }
            return Ok(StepMetrics::Group {
                sums: out.sums,
                stop: out.stop,
            });
        }
        Parallelism::Replicas(group) => {
            let out = group.step(model, &batch.images, &batch.labels, shard_loss)?;
            s.optimizer.step(&out.grads)?;
            (out.logits, out.loss)
        }
        Parallelism::None => {
            let logits = model.forward_t(&batch.images, true)?;
            let loss = shard_loss(&logits, &batch.labels)?;
            let grads = loss.backward()?;
            s.optimizer.step(&grads)?;
            (logits.detach(), loss.detach())
        }
    };
    Ok(StepMetrics::Local {
        correct: correct_predictions(&logits, &batch.labels)?,
        loss,
        samples: n,
    })
}

/// The metrics history of a run directory.
const METRICS_CSV: &str = "metrics.csv";

impl Session {
    /// Reads the epoch's running sums into the run state (before a checkpoint holds them, and
    /// at the end of an epoch pass): one host read.
    fn settle(&mut self, running: &RunningMetrics) -> Result<()> {
        let t = running.read()?;
        let p = &mut self.state.progress;
        (p.loss_sum, p.correct, p.seen) = (t.loss_sum, t.correct, t.seen);
        if t.last_loss.is_some() {
            self.state.last_loss = t.last_loss;
        }
        Ok(())
    }

    /// [`Session::checkpoint`], refused when a weight or buffer is NaN or infinite: a diverged
    /// run stops, naming the step, and the last good checkpoint stays as it was.
    fn checked_checkpoint(&self, position: LoaderState) -> Result<Checkpoint> {
        self.vs.check_finite().map_err(|source| Error::NotFinite {
            step: self.state.global_step,
            source,
        })?;
        Ok(self.checkpoint(position))
    }

    /// The checkpoint of the run with the data loader at `position`.
    fn checkpoint(&self, position: LoaderState) -> Checkpoint {
        let mut ckpt = Checkpoint::new(self.vs.state_dict());
        ckpt.optimizer = Some(self.optimizer.state_dict());
        ckpt.scheduler = self.scheduler.as_ref().map(|s| s.state_dict());
        ckpt.epoch = position.epoch as i64 - 1;
        ckpt.global_step = self.state.global_step;
        ckpt.loss = self.state.last_loss;
        ckpt.best_metric = self.state.best_metric;
        ckpt.data_state = Some(position.to_value());
        for (k, v) in &self.extra {
            ckpt.extra.insert(k.as_str(), v.clone());
        }
        ckpt.extra
            .insert(KEY_HISTORY, history::to_value(&self.state.history));
        if position.batch > 0 {
            ckpt.extra
                .insert(KEY_EPOCH_PROGRESS, self.state.progress.to_value());
        }
        ckpt
    }
}
