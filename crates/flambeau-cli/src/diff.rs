//! `flambeau diff A B`: keys only in A / only in B, shape and dtype differences, and how far
//! apart the common tensors' values are, with the key rule that maps A onto B. The comparison
//! and its reports are `flambeau_serialize::diff`; this file parses and prints.

use std::path::PathBuf;

use flambeau_serialize::diff::diff_files;
use serde_json::json;

/// Options of `diff`.
#[derive(clap::Args)]
pub struct Args {
    /// The first checkpoint (any file `inspect` reads).
    a: PathBuf,
    /// The second checkpoint.
    b: PathBuf,
    /// One JSON object instead of the text.
    #[arg(long)]
    json: bool,
}

/// The `diff` command; returns the exit code (0 identical, 1 different, 2 error), as diff(1).
pub fn run(args: &Args) -> i32 {
    match diff_files(&args.a, &args.b) {
        Ok(d) => {
            if args.json {
                println!("{:#}", d.to_json());
            } else {
                println!("{d}");
            }
            i32::from(!d.diff.identical())
        }
        Err(e) => {
            let e = anyhow::Error::from(e);
            if args.json {
                println!("{:#}", json!({ "error": format!("{e:#}"), "exit_code": 2 }));
            } else {
                eprintln!("error: {e:#}");
            }
            2
        }
    }
}
