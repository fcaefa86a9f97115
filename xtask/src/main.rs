//! `cargo xtask …`: developer tasks that need more than cargo.
//!
//! - `setup`: a Python venv with real PyTorch under `~/.cache/flambeau-venv` (the oracle).
//! - `fixtures [--large] [NAME…]`: regenerate test fixtures by running `xtask/fixtures/NAME.py`
//!   with that venv. Small fixtures are committed; `--large` writes the big ones to
//!   `tests/fixtures-large/` (never committed).
//! - `test`: setup (PyTorch, and OpenMPI through `mpi setup`) + large fixtures + the whole test
//!   suite with PyTorch round trips enabled, then the layer / optimizer / ResNet suites again
//!   with `FLAMBEAU_KERNELS=generic`, then flambeau-parallel's MPI tests (`--features mpi`).
//! - `bench io`: .pth load/save against torch.load/torch.save on the same machine.
//! - `bench train`: ResNet training / eval throughput against PyTorch and plain candle.
//! - `bench parallel`: training through CPU replicas (`ReplicaGroup`) against one device.
//! - `cuda setup`, `cuda check`, `gpu bundle`: the CUDA build without a GPU (see `cuda.rs`).
//! - `mpi setup`: OpenMPI and libclang for flambeau-parallel's `mpi` feature (see `mpi.rs`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

mod bench;
mod bench_parallel;
mod bench_train;
mod cuda;
mod mpi;

/// The `mpi` features of the crates with MPI tests.
const MPI_FEATURES: &str = "flambeau-parallel/mpi,flambeau-train/mpi,flambeau-cli/mpi";

/// Pinned so that fixtures regenerate identically.
const PY_PACKAGES: &[&str] = &[
    "torch==2.15.0",
    "torchvision==0.29.2",
    "numpy",
    "safetensors",
];

/// cuRAND for the test venv (and the CUDA toolkit, `cuda.rs`): PyTorch 2.15's CUDA-13 build no
/// longer depends on nvidia-curand, but candle-core 0.11.1 builds cudarc with `dynamic-linking`,
/// so every CUDA binary names libcurand.so.10 and does not start without it. With it installed,
/// `gpu-check.sh --preflight` (in `.ci/run`) resolves every library of the bundle from this venv.
/// 10.4.0.35 is the CUDA 13.0 Update 2 release (what PyTorch's cu130 build pins).
const CURAND_WHEEL: &str = "nvidia-curand==10.4.0.35";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        print_usage();
        bail!("no command given");
    };
    match cmd.as_str() {
        "setup" => setup().map(|_| ()),
        "fixtures" => fixtures(rest),
        "test" => test(rest),
        "bench" => match rest.first().map(String::as_str) {
            Some("io") => {
                let python = setup()?;
                bench::io(&root(), &python, || {
                    fixtures(&["--large".into(), "serialize".into()])
                })
            }
            Some("train") => bench_train::train(&root(), &venv_dir()?.join("bin/python")),
            Some("parallel") => bench_parallel::parallel(&root()),
            _ => bail!("usage: cargo xtask bench io|train|parallel"),
        },
        "cuda" => cuda::cuda(rest),
        "gpu" => cuda::gpu(rest),
        "mpi" => mpi::mpi(rest),
        "-h" | "--help" | "help" => {
            print_usage();
            Ok(())
        }
        other => {
            print_usage();
            bail!("unknown command `{other}`")
        }
    }
}

fn print_usage() {
    eprintln!(
        "usage: cargo xtask <command>\n\n\
         commands:\n  \
         setup                     install PyTorch into ~/.cache/flambeau-venv (the test oracle)\n  \
         fixtures [--large] [NAME] regenerate fixtures with real PyTorch (xtask/fixtures/NAME.py)\n  \
         test [CARGO TEST ARGS]    setup, mpi setup, large fixtures, then the whole test suite\n  \
         bench io                  .pth load/save speed and memory against PyTorch\n  \
         bench train               ResNet train/eval img/s against PyTorch and plain candle\n  \
         bench parallel            training through CPU replicas against one device\n  \
         cuda setup                the CUDA 13.0 toolkit and NCCL from PyPI under ~/.cache (once)\n  \
         cuda check                clippy on the CUDA build of every crate\n  \
         gpu bundle                a CUDA flambeau + gpu-check.sh for a GPU machine (target/gpu-bundle)\n  \
         mpi setup                 OpenMPI and libclang for `--features mpi` (apt-get, as root)"
    );
}

fn root() -> PathBuf {
    // Read at run time: `cargo run` sets it for this checkout, while the compile-time value may
    // name another clone that shares the target directory (cargo reuses the binary).
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest_dir
        .parent()
        .expect("xtask is inside the workspace")
        .to_path_buf()
}

fn venv_dir() -> Result<PathBuf> {
    let home = std::env::var("HOME").context("HOME is not set")?;
    Ok(PathBuf::from(home).join(".cache/flambeau-venv"))
}

/// `PYTHON -m pip install --quiet --disable-pip-version-check`; the caller adds the rest.
fn pip_install(python: &Path) -> Command {
    let mut c = Command::new(python);
    c.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ]);
    c
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("could not start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// Returns the venv's python, creating the venv and installing PyTorch when needed.
fn setup() -> Result<PathBuf> {
    let venv = venv_dir()?;
    let python = venv.join("bin/python");
    let curand = CURAND_WHEEL.rsplit("==").next().unwrap_or_default();
    let has_all = python.exists()
        && Command::new(&python)
            .arg("-c")
            .arg(format!(
                "import torch, torchvision, numpy, safetensors, importlib.metadata as m; \
                 assert m.version('nvidia-curand') == '{curand}'"
            ))
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
    if has_all {
        return Ok(python);
    }
    eprintln!(
        "xtask setup: installing PyTorch into {} (about 3 GB, a few minutes)…",
        venv.display()
    );
    if !python.exists() {
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    }
    run(pip_install(&python).args(PY_PACKAGES).arg(CURAND_WHEEL))?;
    Ok(python)
}

fn fixtures(args: &[String]) -> Result<()> {
    let python = setup()?;
    let large = args.iter().any(|a| a == "--large");
    let names: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let dir = root().join("xtask/fixtures");
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "py"))
        .filter(|p| {
            let stem = p.file_stem().unwrap_or_default().to_string_lossy();
            !stem.starts_with('_') && (names.is_empty() || names.iter().any(|n| n.as_str() == stem))
        })
        .collect();
    scripts.sort();
    if scripts.is_empty() {
        bail!("no fixture script matched {names:?} in {}", dir.display());
    }
    for script in scripts {
        eprintln!("xtask fixtures: {}", script.display());
        let mut cmd = Command::new(&python);
        cmd.arg(&script).arg("--out-root").arg(root());
        if large {
            cmd.arg("--large");
        }
        run(&mut cmd)?;
    }
    Ok(())
}

fn test(cargo_args: &[String]) -> Result<()> {
    let python = setup()?;
    // OpenMPI for the multi-process pass below (apt-get as root; quick when installed).
    mpi::setup()?;
    fixtures(&["--large".to_string()])?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(&cargo)
        .current_dir(root())
        .args(["test", "--workspace"])
        .args(cargo_args)
        .env("FLAMBEAU_PYTHON", &python)
        .env("FLAMBEAU_REQUIRE_TORCH", "1"))?;
    // The PyTorch-fixture suites again on the device-generic path: the code a GPU runs.
    eprintln!(
        "xtask test: the layer, optimizer and ResNet fixture suites with {GENERIC_ENV}=generic"
    );
    run(Command::new(&cargo)
        .current_dir(root())
        .args(["test"])
        .args(GENERIC_SUITES.iter().flat_map(|p| ["-p", p]))
        .args(cargo_args)
        .env(GENERIC_ENV, "generic")
        .env("FLAMBEAU_PYTHON", &python)
        .env("FLAMBEAU_REQUIRE_TORCH", "1"))?;
    // MpiCollective across processes (mpirun -np 2 and 3 of the test binary), the Trainer's
    // ranks as processes against the one-process run, then `mpirun -np N flambeau train`
    // itself (feature `mpi`).
    eprintln!("xtask test: the MPI tests (--features mpi, under mpirun)");
    run(Command::new(&cargo)
        .current_dir(root())
        .args(["test", "-p", "flambeau-parallel", "-p", "flambeau-train"])
        .args(["-p", "flambeau-cli", "--features", MPI_FEATURES])
        .args(["--test", "mpi", "--test", "trainer", "--test", "mpi_train"])
        .env("FLAMBEAU_REQUIRE_TORCH", "1"))?;
    // device_check's training checks (ResNet-18 steps, optimizers, data loader, replicas), fast
    // kernels against the generic path, as gpu-check.sh runs them against a GPU.
    run(Command::new(&cargo).current_dir(root()).args([
        "run",
        "--quiet",
        "--example",
        "device_check",
        "--",
        "--device",
        "cpu",
    ]))
}

/// flambeau-kernels' switch to the device-generic path (`flambeau_kernels::mode::ENV_VAR`).
const GENERIC_ENV: &str = "FLAMBEAU_KERNELS";

/// The crates whose tests compare layers, optimizers and ResNet steps with PyTorch.
const GENERIC_SUITES: &[&str] = &[
    "flambeau-kernels",
    "flambeau-nn",
    "flambeau-optim",
    "flambeau-vision",
];
