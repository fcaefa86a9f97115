//! Running the `flambeau` binary from the integration tests.
#![allow(dead_code)]

use std::process::{Command, Output};

/// What a finished command printed, stdout then stderr.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs `flambeau ARGS`: whether it succeeded, and what it printed.
pub fn flambeau(args: &[&str]) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_flambeau"))
        .args(args)
        .output()
        .unwrap();
    (o.status.success(), text(&o))
}

/// Runs `flambeau ARGS`: its exit code, and what it printed (stdout then stderr).
pub fn flambeau_code(args: &[&str]) -> (i32, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_flambeau"))
        .args(args)
        .output()
        .unwrap();
    (o.status.code().unwrap_or(-1), text(&o))
}
