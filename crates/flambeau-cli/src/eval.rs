//! `flambeau eval`: the accuracy of a checkpoint (flambeau's or PyTorch's) on a dataset.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::ModuleT;
use flambeau_core::LoadOptions;
use flambeau_nn::loss::{accuracy, cross_entropy};
use flambeau_serialize::{Checkpoint, LoadConfig};
use flambeau_vision::data::{DataLoader, LoaderConfig};
use flambeau_vision::models::ResNet;
use indicatif::{ProgressBar, ProgressStyle};

use crate::data::{DataOptions, DataSpec};
use crate::model;

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
    #[arg(long)]
    pub val_size: Option<usize>,
    /// Seed of the synthetic images [default: the checkpoint's data seed, else 0].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Image side for folder data.
    #[arg(long, default_value_t = 224)]
    pub image_size: u32,
    /// Images per batch.
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// `cpu` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// Loss and accuracy over a whole loader.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    /// Mean cross-entropy.
    pub loss: f64,
    /// Fraction correct.
    pub accuracy: f64,
    /// Examples evaluated.
    pub examples: usize,
}

/// Runs the model in evaluation mode over every batch of `loader`'s current epoch.
pub fn evaluate(model: &ResNet, loader: &mut DataLoader, bar: &ProgressBar) -> Result<Evaluation> {
    let (mut loss_sum, mut correct, mut seen) = (0.0, 0.0, 0usize);
    for batch in loader.epoch() {
        let batch = batch?;
        let logits = model.forward_t(&batch.images, false)?;
        let n = batch.indices.len();
        let loss = cross_entropy(&logits, &batch.labels, &Default::default())?;
        loss_sum += loss.to_scalar::<f32>()? as f64 * n as f64;
        correct += accuracy(&logits, &batch.labels)? * n as f64;
        seen += n;
        bar.inc(1);
    }
    Ok(Evaluation {
        loss: loss_sum / seen.max(1) as f64,
        accuracy: correct / seen.max(1) as f64,
        examples: seen,
    })
}

/// A progress bar for `len` batches (hidden when stderr is not a terminal or `quiet`).
pub fn progress_bar(len: u64, prefix: String, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len).with_prefix(prefix);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} {elapsed_precise}<{eta_precise} {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar
}

/// `flambeau eval`.
pub fn run(args: &Args) -> Result<()> {
    let device = model::parse_device(&args.device)?;
    let ckpt = Checkpoint::load(
        &args.checkpoint,
        &LoadConfig {
            device: device.clone(),
        },
    )?;
    let arch = resolve_arch(args.arch.as_deref(), &ckpt)?;
    let num_classes = model::num_classes(&ckpt.model)
        .context("the checkpoint has no `fc.weight`: is it a torchvision ResNet?")?;
    let seed = args.seed.unwrap_or_else(|| data_seed(&ckpt).unwrap_or(0));
    let data = args.data.open(&DataOptions {
        train_size: 1,
        val_size: args
            .val_size
            .unwrap_or_else(|| trained_val_size(&ckpt).unwrap_or(1024)),
        image_size: args.image_size,
        seed,
    })?;
    let classes = data.val.classes().len();
    if classes != num_classes {
        bail!(
            "the checkpoint's classifier has {num_classes} outputs but the data has {classes} classes"
        );
    }
    let (vs, net) = model::build(&arch, num_classes, &device, 0)?;
    let mut opts = LoadOptions::default();
    for rule in model::unwrap_rules(&ckpt.model) {
        opts = opts.rule(rule);
    }
    vs.load_state_dict(&ckpt.model, &opts)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("loading {} into {arch}", args.checkpoint.display()))?;
    let mut loader = DataLoader::new(
        data.val,
        LoaderConfig {
            batch_size: args.batch_size,
            shuffle: false,
            normalize: Some(data.normalize),
            ..Default::default()
        },
        &device,
    )?;
    let bar = progress_bar(loader.len() as u64, "eval".into(), false);
    let e = evaluate(&net, &mut loader, &bar)?;
    bar.finish_and_clear();
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

/// The architecture: `--arch`, else the checkpoint's `arch` entry, else recognised from its keys.
pub fn resolve_arch(requested: Option<&str>, ckpt: &Checkpoint) -> Result<String> {
    let unwrapped = unwrap(&ckpt.model)?;
    let recognised = model::infer_arch(&unwrapped);
    let stored = ckpt.extra.get("arch").and_then(|v| v.as_str());
    match (requested, stored.or(recognised)) {
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

/// The state dict without DataParallel / torch.compile prefixes.
pub fn unwrap(sd: &flambeau_core::StateDict) -> Result<flambeau_core::StateDict> {
    let mut sd = sd.clone();
    for rule in model::unwrap_rules(&sd) {
        sd = rule.apply(&sd, &[])?;
    }
    Ok(sd)
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
