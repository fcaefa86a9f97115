//! `flambeau`: train and evaluate ResNets; inspect and convert PyTorch checkpoints.

mod convert;
mod diff;
mod doctor;
mod eval;
mod inspect;
mod model;
mod progress;
mod train;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "flambeau",
    version,
    about = "PyTorch checkpoints without the classic failures"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a torchvision ResNet with checkpoints that resume exactly and load in PyTorch.
    Train(Box<train::Args>),
    /// Accuracy of a checkpoint (flambeau's or PyTorch's) on a dataset.
    Eval(eval::Args),
    /// Print the tree of a .pth / .safetensors file and what kind of file it looks like.
    Inspect {
        /// The file.
        file: PathBuf,
        /// One JSON object per tensor (key path, dtype, shape) instead of the tree.
        #[arg(long)]
        json: bool,
        /// Add min, max, mean and sum of every tensor (computed in f64).
        #[arg(long)]
        stats: bool,
    },
    /// Convert between .pth (zip or legacy in, zip out) and .safetensors, fixing keys on the way.
    Convert(convert::Args),
    /// Why a checkpoint will not load into a model, in PyTorch's words, and the fix
    /// (exit code 0: loads as is, 1: the printed fix makes it load, 2: cannot load).
    Doctor(doctor::Args),
    /// How two checkpoints differ: keys, shapes, dtypes and values (exit code 0: identical,
    /// 1: different, 2: error).
    Diff(diff::Args),
}

fn main() -> Result<()> {
    // Allocator and thread-pool settings for training and eval (see the module's docs).
    flambeau_kernels::runtime::configure_for_training();
    match Cli::parse().command {
        Command::Inspect { file, json, stats } => inspect::run(&file, json, stats),
        Command::Convert(args) => convert::run(&args),
        Command::Doctor(args) => std::process::exit(doctor::run(&args)),
        Command::Diff(args) => std::process::exit(diff::run(&args)),
        // The loops run inside rayon's pool, where parallel kernels fork and join directly.
        Command::Train(args) => flambeau_kernels::runtime::on_worker(|| train::run(&args)),
        Command::Eval(args) => flambeau_kernels::runtime::on_worker(|| eval::run(&args)),
    }
}

/// A clap value parser for counts that must be at least 1 (batch sizes, dataset sizes): a
/// negative or zero value gets a message saying so, not "unexpected argument".
fn positive(s: &str) -> Result<usize, String> {
    match s.trim().parse::<i128>() {
        Ok(n) if n >= 1 => usize::try_from(n).map_err(|_| format!("{s} is too large")),
        Ok(_) => Err(format!("must be a positive whole number, got {s}")),
        Err(_) => Err(format!("expected a positive whole number, got `{s}`")),
    }
}
