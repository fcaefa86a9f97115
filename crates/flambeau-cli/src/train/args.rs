//! The command line of `flambeau train`.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::ValueEnum;
use flambeau_core::{Dict, DictKind, Value};
use flambeau_serialize::Checkpoint;
use flambeau_train::recipe::{OptimizerChoice, Recipe, SchedulerChoice};
use flambeau_vision::data::DataSpec;

/// `--optimizer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OptimizerKind {
    /// SGD with momentum 0.9 and Nesterov (torchvision's recipe).
    Sgd,
    /// AdamW (decoupled weight decay).
    Adamw,
}

/// `--scheduler`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SchedulerKind {
    /// Constant learning rate.
    None,
    /// StepLR: multiply by `--gamma` every `--step-size` epochs.
    Step,
    /// MultiStepLR: multiply by `--gamma` at each of `--milestones` (epochs).
    Multistep,
    /// CosineAnnealingLR over the run's epochs.
    Cosine,
    /// OneCycleLR over the run's steps (stepped every batch; `--lr` is the peak).
    Onecycle,
}

impl From<OptimizerKind> for OptimizerChoice {
    fn from(kind: OptimizerKind) -> Self {
        match kind {
            OptimizerKind::Sgd => OptimizerChoice::Sgd,
            OptimizerKind::Adamw => OptimizerChoice::AdamW,
        }
    }
}

impl From<SchedulerKind> for SchedulerChoice {
    fn from(kind: SchedulerKind) -> Self {
        match kind {
            SchedulerKind::None => SchedulerChoice::Constant,
            SchedulerKind::Step => SchedulerChoice::Step,
            SchedulerKind::Multistep => SchedulerChoice::MultiStep,
            SchedulerKind::Cosine => SchedulerChoice::Cosine,
            SchedulerKind::Onecycle => SchedulerChoice::OneCycle,
        }
    }
}

/// A flag value as the messages print it: `sgd` → `Sgd`, `onecycle` → `Onecycle`.
pub fn title(name: &str) -> String {
    let mut c = name.chars();
    c.next()
        .map(|first| first.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// Train a torchvision ResNet, checkpointing to `--out` and resuming exactly.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Architecture. On --resume it is read from the checkpoint.
    #[arg(long, value_parser = crate::model::ARCHS)]
    pub arch: Option<String>,
    /// Data: `synthetic` (built in, needs nothing), `cifar10:DIR` (binary version) or
    /// `folder:DIR` (DIR/train/<class>/*.png and DIR/val/<class>/*.png).
    #[arg(long, default_value = "synthetic")]
    pub data: DataSpec,
    /// Total epochs of the run (a resumed run continues up to this many).
    #[arg(long, default_value_t = 3)]
    pub epochs: u64,
    /// Images per batch.
    #[arg(long, default_value_t = 64, value_parser = crate::positive, allow_negative_numbers = true)]
    pub batch_size: usize,
    /// Learning rate [default: 0.02 for sgd, 0.001 for adamw].
    #[arg(long)]
    pub lr: Option<f64>,
    /// Optimizer [default: sgd]. On --resume it is read from the checkpoint.
    #[arg(long, value_enum)]
    pub optimizer: Option<OptimizerKind>,
    /// Weight decay [default: 5e-4 for sgd, 0.01 for adamw].
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Learning-rate schedule [default: cosine]. On --resume it is read from the checkpoint.
    #[arg(long, value_enum)]
    pub scheduler: Option<SchedulerKind>,
    /// StepLR period in epochs [default: a third of --epochs].
    #[arg(long)]
    pub step_size: Option<i64>,
    /// Decay factor of step and multistep.
    #[arg(long, default_value_t = 0.1)]
    pub gamma: f64,
    /// MultiStepLR milestones (epochs), comma separated [default: half and three quarters].
    #[arg(long, value_delimiter = ',')]
    pub milestones: Vec<i64>,
    /// Label smoothing of the cross-entropy loss.
    #[arg(long, default_value_t = 0.0)]
    pub label_smoothing: f64,
    /// `cpu`, `cuda:0`, or `cuda:0,1` for data-parallel training over those GPUs; under
    /// torchrun or mpirun, `cuda` gives each process the GPU `cuda:LOCAL_RANK`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Data-parallel replicas on each listed device (`--device cpu --replicas 2`: two CPU
    /// replicas); each batch is split over all of them.
    #[arg(long, default_value_t = 1, value_parser = crate::positive, allow_negative_numbers = true)]
    pub replicas: usize,
    /// Run directory: checkpoints (last.pth, best.pth, epoch-NNNN.pth), metrics.csv, metrics.png.
    #[arg(long, default_value = "runs/train")]
    pub out: PathBuf,
    /// Continue a run: a checkpoint path (flambeau's or PyTorch's), or `auto` for OUT/last.pth
    /// when it exists.
    #[arg(long)]
    pub resume: Option<String>,
    /// Fine-tune from these weights (e.g. a torchvision .pth): every tensor whose name and shape
    /// match is loaded; a classifier of another size is skipped and reported.
    #[arg(long, conflicts_with = "resume")]
    pub init_from: Option<PathBuf>,
    /// Start a new run in a directory that already holds one, replacing its checkpoints and
    /// metrics (without it, such a directory is refused: continue it with --resume auto).
    #[arg(long, conflicts_with = "resume")]
    pub force: bool,
    /// Seed of the initial weights, the data order and the augmentation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Synthetic training images (the default is about one minute of ResNet-18 on 2 CPU cores).
    #[arg(long, default_value_t = 20480, value_parser = crate::positive, allow_negative_numbers = true)]
    pub train_size: usize,
    /// Synthetic validation images.
    #[arg(long, default_value_t = 1024, value_parser = crate::positive, allow_negative_numbers = true)]
    pub val_size: usize,
    /// Image side for folder data.
    #[arg(long, default_value_t = 224)]
    pub image_size: u32,
    /// Epoch checkpoints to keep besides last.pth and best.pth.
    #[arg(long, default_value_t = 3)]
    pub keep: usize,
    /// Also save last.pth every N optimizer steps (0: only at the end of each epoch).
    #[arg(long, default_value_t = 0)]
    pub save_every: u64,
    /// Stop (with a checkpoint) once this many optimizer steps have been taken in total, e.g. to
    /// fit a job's time limit; `--resume auto` continues exactly.
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// No progress bar (per-epoch lines only).
    #[arg(long)]
    pub quiet: bool,
}

impl Args {
    /// The optimizer and schedule the flags ask for; when resuming, the ones `saved` continues
    /// (an explicit flag that contradicts them is an error, not silently ignored).
    pub fn recipe(&self, saved: Option<&Checkpoint>) -> Result<Recipe> {
        let (saved_optimizer, saved_scheduler) = match saved {
            Some(c) => Recipe::saved_choices(c)?,
            None => (None, None),
        };
        let requested = (
            self.optimizer.map(OptimizerChoice::from),
            self.scheduler.map(SchedulerChoice::from),
        );
        let optimizer = saved_optimizer.or(requested.0).unwrap_or_default();
        let scheduler = saved_scheduler.or(requested.1).unwrap_or_default();
        for (what, requested, actual) in [
            ("optimizer", requested.0.map(|o| o.name()), optimizer.name()),
            ("scheduler", requested.1.map(|s| s.name()), scheduler.name()),
        ] {
            if let Some(r) = requested.filter(|r| *r != actual) {
                bail!(
                    "--{what} {} was given, but the checkpoint continues a {} run; drop --{what} to resume it",
                    title(r),
                    title(actual)
                );
            }
        }
        Ok(Recipe {
            optimizer,
            lr: self.lr,
            weight_decay: self.weight_decay,
            scheduler,
            epochs: self.epochs,
            step_size: self.step_size,
            gamma: self.gamma,
            milestones: self.milestones.clone(),
        })
    }

    /// The command line as a dict, stored in every checkpoint for people reading it
    /// (torchvision's reference scripts store their `args` too), with the number of processes.
    pub fn to_value(&self, world_size: usize) -> Value {
        let mut d = Dict::new(DictKind::Plain);
        let opt = |v: Option<String>| v.map(Value::Str).unwrap_or(Value::None);
        d.insert("data", format!("{:?}", self.data));
        d.insert("epochs", self.epochs as i64);
        d.insert("batch_size", self.batch_size as i64);
        d.insert("lr", self.lr.map(Value::Float).unwrap_or(Value::None));
        d.insert(
            "optimizer",
            opt(self.optimizer.map(|o| format!("{o:?}").to_lowercase())),
        );
        d.insert(
            "scheduler",
            opt(self.scheduler.map(|s| format!("{s:?}").to_lowercase())),
        );
        d.insert("label_smoothing", self.label_smoothing);
        d.insert("seed", self.seed as i64);
        d.insert("device", self.device.as_str());
        d.insert("replicas", self.replicas as i64);
        d.insert("world_size", world_size as i64);
        d.insert("train_size", self.train_size as i64);
        d.insert("val_size", self.val_size as i64);
        d.insert(
            "init_from",
            opt(self.init_from.as_ref().map(|p| p.display().to_string())),
        );
        Value::Dict(d)
    }
}
