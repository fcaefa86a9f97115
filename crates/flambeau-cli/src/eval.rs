//! `flambeau eval`: the accuracy of a checkpoint (flambeau's or PyTorch's) on a dataset.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use flambeau_serialize::Checkpoint;
use flambeau_train::evaluate;
use flambeau_vision::data::{DataOptions, DataSpec};
use flambeau_vision::models::ResNetCheckpoint;

use crate::model;
use crate::progress::Progress;

/// Evaluate a checkpoint on a validation set.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The checkpoint: a flambeau run's last.pth/best.pth, a torchvision state_dict, a PyTorch
    /// training checkpoint…
    pub checkpoint: PathBuf,
    /// Architecture [default: read from the checkpoint].
    #[arg(long, value_parser = model::ARCHS)]
    pub arch: Option<String>,
    /// Data: `synthetic`, `cifar10:DIR` or `folder:DIR` (its val split is used).
    #[arg(long, default_value = "synthetic")]
    pub data: DataSpec,
    /// Synthetic validation images [default: the training run's --val-size, else 1024].
    #[arg(long, value_parser = crate::positive, allow_negative_numbers = true)]
    pub val_size: Option<usize>,
    /// Seed of the synthetic images [default: the checkpoint's data seed, else 0].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Image side for folder data.
    #[arg(long, default_value_t = 224)]
    pub image_size: u32,
    /// Images per batch.
    #[arg(long, default_value_t = 128, value_parser = crate::positive, allow_negative_numbers = true)]
    pub batch_size: usize,
    /// `cpu` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// `flambeau eval`.
pub fn run(args: &Args) -> Result<()> {
    let device = model::parse_device(&args.device, "evaluating")?;
    let mut opened = ResNetCheckpoint::open(&args.checkpoint, &device)?;
    let arch = resolve_arch(args.arch.as_deref(), &opened)?;
    opened.arch = Some(arch.clone());
    let ckpt = &opened.checkpoint;
    let num_classes = opened.classes()?;
    let seed = args.seed.unwrap_or_else(|| data_seed(ckpt).unwrap_or(0));
    let data = args.data.open(&DataOptions {
        train_size: 1,
        val_size: args
            .val_size
            .unwrap_or_else(|| trained_val_size(ckpt).unwrap_or(1024)),
        image_size: args.image_size,
        seed,
    })?;
    let classes = data.val.classes().len();
    if classes != num_classes {
        bail!(
            "the checkpoint's classifier has {num_classes} outputs but the data has {classes} classes"
        );
    }
    let (_, net) = opened
        .build(&device)
        .with_context(|| format!("loading {} into {arch}", args.checkpoint.display()))?;
    let mut loader = data.val_loader(args.batch_size, &device)?;
    let e = evaluate(&net, &mut loader, &mut Progress::new(false, "eval"))?;
    println!(
        "{}: {arch}, {} — accuracy {:.2}% ({} images), loss {:.4} on {}",
        args.checkpoint.display(),
        match ckpt.epoch {
            -1 => "no training state".to_string(),
            e => format!("after epoch {}", e + 1),
        },
        100.0 * e.accuracy,
        e.examples,
        e.loss,
        match args.data {
            DataSpec::Synthetic => "the synthetic validation shapes".to_string(),
            _ => format!("the validation split of {}", data.description),
        }
    );
    Ok(())
}

/// The architecture: `--arch`, else the checkpoint's (its `arch` entry, else recognised).
pub fn resolve_arch(requested: Option<&str>, ckpt: &ResNetCheckpoint) -> Result<String> {
    match (requested, ckpt.arch.as_deref()) {
        (Some(r), Some(found)) if r != found => bail!(
            "--arch {r}, but the checkpoint holds a {found}; drop --arch or pass --arch {found}"
        ),
        (Some(r), _) => Ok(r.to_string()),
        (None, Some(found)) => Ok(found.to_string()),
        (None, None) => bail!(
            "cannot tell which ResNet the checkpoint holds; pass --arch ({})",
            model::ARCHS.join("|")
        ),
    }
}

/// The seed of the data the checkpoint was trained on (flambeau checkpoints store it).
pub fn data_seed(ckpt: &Checkpoint) -> Option<u64> {
    ckpt.data_state
        .as_ref()?
        .get("seed")?
        .as_i64()
        .map(|s| s as u64)
}

/// The synthetic validation size a flambeau run used (its `args` entry), so that `eval` measures
/// the same images the run's validation did.
fn trained_val_size(ckpt: &Checkpoint) -> Option<usize> {
    let n = ckpt.extra.get("args")?.get("val_size")?.as_i64()?;
    usize::try_from(n).ok()
}
