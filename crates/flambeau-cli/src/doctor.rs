//! `flambeau doctor FILE --arch resnet50`: why a checkpoint will not load into a model, and
//! the fix. The analysis is `flambeau_vision::doctor`; this file parses and prints.

use std::path::PathBuf;

use flambeau_vision::doctor::{diagnose_file, Target, Verdict};
use serde_json::json;

/// Options of `doctor`.
#[derive(clap::Args)]
pub struct Args {
    /// The checkpoint: .pth/.pt/.bin/.ckpt (zip or legacy), TorchScript, .safetensors, or a
    /// sharded checkpoint.
    file: PathBuf,
    /// The architecture to load it into: resnet18, resnet34, resnet50, resnet101, resnet152,
    /// wide_resnet50_2, resnext50_32x4d.
    #[arg(long, required_unless_present = "model", conflicts_with = "model")]
    arch: Option<String>,
    /// The model's classes (torchvision's default: 1000).
    #[arg(long, requires = "arch", value_parser = crate::positive)]
    num_classes: Option<usize>,
    /// Compare against the keys and shapes of this checkpoint instead of a built architecture.
    #[arg(long)]
    model: Option<PathBuf>,
    /// One JSON object instead of the text.
    #[arg(long)]
    json: bool,
}

/// The `doctor` command; returns the exit code (0 loads, 1 a fix exists, 2 cannot load).
pub fn run(args: &Args) -> i32 {
    let target = match (&args.arch, &args.model) {
        (Some(name), _) => Target::Arch {
            name: name.clone(),
            num_classes: args.num_classes,
        },
        (None, Some(path)) => Target::Reference(path.clone()),
        (None, None) => unreachable!("clap requires --arch or --model"),
    };
    match diagnose_file(&args.file, &target) {
        Ok(report) => {
            if args.json {
                println!("{:#}", report.to_json());
            } else {
                println!("{report}");
            }
            report.verdict.exit_code()
        }
        Err(e) => {
            if args.json {
                println!("{:#}", json!({ "error": e.to_string(), "exit_code": 2 }));
            } else {
                eprintln!("error: {e}");
            }
            Verdict::CannotLoad.exit_code()
        }
    }
}
