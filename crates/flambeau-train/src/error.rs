//! The error type of flambeau-train.

use std::path::PathBuf;

use thiserror::Error;

/// What can go wrong training, evaluating or resuming.
#[derive(Debug, Error)]
pub enum Error {
    /// From flambeau-core (optimizer steps, state).
    #[error(transparent)]
    Core(#[from] flambeau_core::Error),
    /// Reading or writing a checkpoint.
    #[error(transparent)]
    Serialize(#[from] flambeau_serialize::Error),
    /// The data loader or the model.
    #[error(transparent)]
    Vision(#[from] flambeau_vision::Error),
    /// The data-parallel replicas.
    #[error(transparent)]
    Parallel(#[from] flambeau_parallel::Error),
    /// From Candle (forward, backward).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// The model in a checkpoint does not fit the model being trained.
    #[error("resuming the model: {0}")]
    ResumeModel(#[source] flambeau_core::Error),
    /// The optimizer or scheduler state in a checkpoint does not fit the ones being trained.
    #[error("resuming the {what}: {source}")]
    ResumeState {
        /// `optimizer` or `scheduler`.
        what: &'static str,
        /// Why it was refused.
        #[source]
        source: flambeau_core::Error,
    },
    /// A checkpoint's scheduler is none of the schedules a
    /// [`Recipe`](crate::recipe::Recipe) runs.
    #[error(
        "the checkpoint's scheduler (fields {fields:?}) is not one `flambeau train` runs ({})",
        flambeau_optim::SchedulerKind::CLASS_NAMES.join(", ")
    )]
    UnknownScheduler {
        /// The fields of its `state_dict()`.
        fields: Vec<String>,
    },
    /// The checkpoint stopped at a batch this data does not have.
    #[error(
        "the checkpoint stopped at batch {batch} of an epoch, but this data has {batches} batches per epoch: resume with the same batch size and data"
    )]
    BatchOutOfRange {
        /// The batch the checkpoint stopped before.
        batch: u64,
        /// Batches per epoch of the loader.
        batches: usize,
    },
    /// Writing `metrics.csv` (or another run file).
    #[error("writing {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// Drawing or encoding the metrics plot (writing the file is [`Error::Io`]).
    #[error("writing the plot {path}: {source}")]
    Plot {
        /// The file.
        path: PathBuf,
        /// What the drawing library or the PNG encoder said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A new run was about to write into the directory of another run.
    #[error(
        "{dir} already holds a run ({found}): continue it (`--resume auto`, Trainer::resume), start over in it on purpose (`--force`, TrainerConfig::overwrite), or choose another directory",
        dir = dir.display(),
        found = found.display()
    )]
    ExistingRun {
        /// The run directory.
        dir: PathBuf,
        /// A file of the existing run.
        found: PathBuf,
    },
    /// The model's weights or buffers stopped being finite: nothing was saved.
    #[error(
        "training diverged by step {step}: {source}; no checkpoint was written, the last one saved is intact (lower the learning rate, or check the data)"
    )]
    NotFinite {
        /// Optimizer steps taken when the check failed.
        step: i64,
        /// Which tensor, and how many of its values.
        #[source]
        source: flambeau_core::Error,
    },
    /// The Ctrl-C handler could not be installed.
    #[error("cannot install the Ctrl-C handler: {0}")]
    Signal(#[from] ctrlc::Error),
}

/// `Result` with flambeau-train's [`Error`](enum@Error).
pub type Result<T> = std::result::Result<T, Error>;
