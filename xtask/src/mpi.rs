//! `cargo xtask mpi setup`: what `--features mpi` needs to build and run (../shared/PARALLEL.md,
//! "MPI on these machines"): Debian's OpenMPI (`mpicc`, `mpirun`, headers) for the `mpi` crate
//! and its launcher, and libclang for the crate's bindgen step.
//!
//! Idempotent and quick when everything is there; as root it installs what is missing with
//! apt-get (about a minute the first time); otherwise it says what to install and fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Result};

use crate::run;

/// The Debian packages behind the three checks below.
const PACKAGES: &[&str] = &["libopenmpi-dev", "openmpi-bin", "libclang-dev"];

/// `cargo xtask mpi …`.
pub fn mpi(args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("setup") => setup(),
        _ => bail!("usage: cargo xtask mpi setup"),
    }
}

/// Checks for `mpicc`, `mpirun` and libclang; installs the packages when one is missing.
pub fn setup() -> Result<()> {
    let absent = missing();
    if absent.is_empty() {
        eprintln!("xtask mpi setup: mpicc, mpirun and libclang are installed");
        return Ok(());
    }
    let what = absent.join(", ");
    let install = format!(
        "apt-get install -y --no-install-recommends {}",
        PACKAGES.join(" ")
    );
    if !is_root() {
        bail!(
            "MPI is not fully installed ({what} missing) and this is not root, so it cannot be \
             installed here: run `sudo {install}` (Debian/Ubuntu) or install OpenMPI and libclang \
             another way, then run `cargo xtask mpi setup` again"
        );
    }
    if which("apt-get").is_none() {
        bail!("MPI is not fully installed ({what} missing) and there is no apt-get: install OpenMPI (mpicc, mpirun) and libclang");
    }
    eprintln!(
        "xtask mpi setup: {what} missing; installing {}",
        PACKAGES.join(" ")
    );
    // A machine whose package lists were never fetched (or were cleaned) has no candidates.
    let known = Command::new("apt-cache")
        .args(["show", PACKAGES[0]])
        .output()
        .is_ok_and(|o| o.status.success() && !o.stdout.is_empty());
    if !known {
        eprintln!("xtask mpi setup: apt-get update");
        run(apt().arg("update"))?;
    }
    eprintln!("xtask mpi setup: {install}");
    let installed = apt()
        .args(["install", "-y", "--no-install-recommends"])
        .args(PACKAGES)
        .status();
    if !installed.is_ok_and(|s| s.success()) {
        // Stale lists name package versions the mirror no longer has.
        eprintln!("xtask mpi setup: install failed; apt-get update and once more");
        run(apt().arg("update"))?;
        run(apt()
            .args(["install", "-y", "--no-install-recommends"])
            .args(PACKAGES))?;
    }
    let still = missing();
    if !still.is_empty() {
        bail!(
            "after installing {}, still missing: {}",
            PACKAGES.join(" "),
            still.join(", ")
        );
    }
    eprintln!("xtask mpi setup: done");
    Ok(())
}

fn apt() -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.env("DEBIAN_FRONTEND", "noninteractive");
    cmd
}

/// The names of what is missing, empty when MPI builds and runs.
fn missing() -> Vec<&'static str> {
    let mut missing = Vec::new();
    if which("mpicc").is_none() {
        missing.push("mpicc (libopenmpi-dev)");
    }
    if which("mpirun").is_none() {
        missing.push("mpirun (openmpi-bin)");
    }
    if !has_libclang() {
        missing.push("libclang (libclang-dev)");
    }
    missing
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The first `name` on `PATH`.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Whether bindgen (clang-sys) will find a libclang: `$LIBCLANG_PATH`, LLVM's folders, or the
/// system library folders, holding `libclang.so*` or `libclang-N*.so*` (not `libclang-cpp`).
fn has_libclang() -> bool {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("LIBCLANG_PATH") {
        dirs.push(PathBuf::from(p));
    }
    if let Ok(entries) = std::fs::read_dir("/usr/lib") {
        dirs.extend(
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("llvm-"))
                })
                .map(|p| p.join("lib")),
        );
    }
    dirs.extend(
        [
            "/usr/lib/x86_64-linux-gnu",
            "/usr/lib/aarch64-linux-gnu",
            "/usr/lib64",
            "/usr/lib",
            "/usr/local/lib",
        ]
        .map(PathBuf::from),
    );
    dirs.iter().any(|d| dir_has_libclang(d))
}

fn dir_has_libclang(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.filter_map(|e| e.ok()).any(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("libclang") else {
            return false;
        };
        rest.starts_with(".so")
            || (rest.starts_with('-')
                && rest[1..].starts_with(|c: char| c.is_ascii_digit())
                && rest.contains(".so"))
    })
}
