//! # flambeau-train
//!
//! The training loop of `flambeau train` as a library, for any model:
//! - [`Trainer`]: [`Trainer::fit`] / [`Trainer::evaluate`] over the user's model (a ResNet or any
//!   `candle_core::ModuleT` with its `VarStore`), optimizer, scheduler and data loaders;
//! - checkpoints in PyTorch's tutorial layout through the run directory's `CheckpointManager`
//!   (`last.pth`, `best.pth`, the last K `epoch-NNNN.pth`, `last.pth` every N steps), and
//!   [`Trainer::resume`] that continues one — mid-epoch included — bit for bit;
//! - [`Resume`]: `auto` (the run directory's latest) or a file, flambeau's or PyTorch's;
//! - the metrics history in every checkpoint, `metrics.csv` and `metrics.png`;
//! - [`StopSignal`]: stop with a checkpoint on request; Ctrl-C is opt-in ([`StopSignal::ctrl_c`]);
//! - [`recipe`]: the optimizer and learning-rate schedule with torchvision's defaults, and the
//!   ones a checkpoint continues with;
//! - [`Callback`]: progress for a listener (the `flambeau` command's bars are one); the step's
//!   loss and accuracy stay on the device until a listener reads them ([`BatchEnd::read`]).
//!
//! Run the loop inside `flambeau_kernels::runtime::on_worker` (as the `flambeau` command does)
//! so that the parallel kernels fork and join directly.

mod callback;
mod error;
mod evaluate;
pub mod history;
mod plot;
pub mod recipe;
mod resume;
mod run_state;
mod running;
mod stop;
mod trainer;

pub use callback::{BatchEnd, Callback, EpochEnd, EpochSoFar};
pub use error::{Error, Result};
pub use evaluate::{evaluate, Evaluation};
pub use history::{EpochProgress, EpochRecord};
pub use plot::write_png as write_plot;
pub use resume::Resume;
pub use run_state::RunState;
pub use stop::{StopSignal, INTERRUPTED_EXIT_CODE};
pub use trainer::{FitOutcome, Resumed, StopReason, Trainer, TrainerConfig};
