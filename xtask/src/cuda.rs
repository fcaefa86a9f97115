//! `cargo xtask cuda setup | check` and `cargo xtask gpu bundle`: build and lint flambeau's CUDA
//! code on machines without a GPU (../shared/CUDA.md has the facts behind each step).
//!
//! - `setup`: the CUDA 13.0 toolkit from PyPI wheels (nvcc, headers, the libraries candle links)
//!   and NCCL under `~/.cache`, arranged as a `CUDA_HOME`, plus a stub `libcuda.so` to link
//!   against (the real one comes with the driver). Idempotent: a finished setup is reused.
//! - `check`: clippy on the CUDA build of the whole workspace (`CUDA_COMPUTE_CAP=90`), in its
//!   own target directory so that the CPU build cache stays valid. `--all-features` includes
//!   `nccl` (flambeau-parallel's NCCL backend, linked against the pinned PyPI NCCL).
//! - `gpu bundle`: a stripped release `flambeau` built with CUDA, the device check and benchmark
//!   programs (xz-compressed), `gpu-check.sh` and its Python helpers, and `runtime-libraries.txt`
//!   (the libraries each binary needs) in one folder small enough to carry to a GPU machine
//!   without Rust.
//!
//! Both use the release profile in one target directory (`FLAMBEAU_CUDA_TARGET_DIR`, default
//! `~/.cache/flambeau-target-cuda`): candle-kernels' build script (nvcc: the PTX and libmoe.a,
//! minutes on 2 cores) reruns for every profile, so `check` runs clippy with `--release` and the
//! bundle's build after it reuses those kernels (and every build script) instead of building
//! them a second time. The bundle's three programs are built in one cargo call, so that their
//! dependencies are compiled once with one set of features.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{pip_install, root, run};

/// CUDA 13.0 (Update 2): what PyTorch's cu130 build pins, and what driver 580 accepts. A newer
/// nvcc emits PTX that driver refuses; cudarc 0.19 rejects 13.5.
const WHEELS: &[&str] = &[
    "nvidia-cuda-nvcc==13.0.88",
    "nvidia-nvvm==13.0.88",
    "nvidia-cuda-crt==13.0.88",
    "nvidia-cuda-cccl==13.0.85",
    "nvidia-cuda-runtime==13.0.96",
    "nvidia-cuda-nvrtc==13.0.88",
    "nvidia-cublas==13.1.0.3",
    crate::CURAND_WHEEL,
];

/// Unversioned names the linker looks for, and the versioned library each points at.
const LIBRARY_LINKS: &[(&str, &str)] = &[
    ("libcublas.so", "libcublas.so.13"),
    ("libcublasLt.so", "libcublasLt.so.13"),
    ("libcudart.so", "libcudart.so.13"),
    ("libnvrtc.so", "libnvrtc.so.13"),
    ("libcurand.so", "libcurand.so.10"),
];

/// NCCL for the `nccl` feature: the version PyTorch 2.11.0 pins for Linux
/// (`nvidia-nccl-cu13==2.28.9` in its metadata), i.e. the libnccl.so.2 a GPU machine's PyTorch
/// install has. Installed beside the toolkit, in a folder of its own, so that a change of this pin
/// re-links `CUDA_HOME` without reinstalling the toolkit (nor rebuilding candle's kernels).
const NCCL_WHEEL: &str = "nvidia-nccl-cu13==2.28.9";

/// The GPU generation kernels are compiled for (H100/H200).
const COMPUTE_CAP: &str = "90";

fn cache_dir() -> Result<PathBuf> {
    let home = std::env::var("HOME").context("HOME is not set")?;
    Ok(PathBuf::from(home).join(".cache"))
}

/// The toolkit folder, named after the pins so that a change of pins installs afresh.
fn toolkit_dir() -> Result<PathBuf> {
    Ok(cache_dir()?.join("flambeau-cuda-13.0.88"))
}

/// `cargo xtask cuda …`.
pub fn cuda(args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("setup") => setup().map(|_| ()),
        Some("check") => check(),
        _ => bail!("usage: cargo xtask cuda setup|check"),
    }
}

/// `cargo xtask gpu bundle`.
pub fn gpu(args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("bundle") => bundle(),
        _ => bail!("usage: cargo xtask gpu bundle"),
    }
}

/// Returns the `CUDA_HOME` folder, installing the toolkit and NCCL first when needed.
fn setup() -> Result<PathBuf> {
    let home = setup_toolkit()?;
    setup_nccl(&home)?;
    Ok(home)
}

/// The toolkit part of [`setup`].
fn setup_toolkit() -> Result<PathBuf> {
    let dir = toolkit_dir()?;
    let home = dir.join("home");
    let done = dir.join("complete");
    if done.exists() {
        return Ok(home);
    }
    eprintln!(
        "xtask cuda setup: installing the CUDA 13.0 toolkit wheels into {} (about 800 MB, once)…",
        dir.display()
    );
    let wheels = dir.join("wheels");
    if wheels.exists() {
        std::fs::remove_dir_all(&wheels).context("removing a partial install")?;
    }
    pip_install_into(&wheels, WHEELS)?;
    let cu13 = wheels.join("nvidia/cu13");
    if !cu13.join("bin/nvcc").exists() {
        bail!("the wheels did not install nvcc under {}", cu13.display());
    }
    if home.exists() {
        std::fs::remove_dir_all(&home).context("removing a partial CUDA_HOME")?;
    }
    // A hard-linked copy: the wheels' own layout stays intact, and no space is used twice.
    run(Command::new("cp").arg("-al").arg(&cu13).arg(&home))?;
    let lib = home.join("lib");
    std::os::unix::fs::symlink("lib", home.join("lib64")).context("linking lib64")?;
    for (link, target) in LIBRARY_LINKS {
        if !lib.join(target).exists() {
            bail!(
                "{} is missing from the toolkit wheels",
                lib.join(target).display()
            );
        }
        std::os::unix::fs::symlink(target, lib.join(link))
            .with_context(|| format!("linking {link}"))?;
    }
    build_libcuda_stub(&lib.join("stubs"))?;
    std::fs::write(&done, WHEELS.join("\n")).context("marking the setup complete")?;
    eprintln!("xtask cuda setup: CUDA_HOME is {}", home.display());
    Ok(home)
}

/// NCCL into `CUDA_HOME` (the `nccl` feature links `-lnccl`): the pinned wheel installed into
/// its own folder under the toolkit's, then `lib/libnccl.so` (→ the wheel's `libnccl.so.2`) and
/// `include/nccl.h` linked into `home`. Idempotent; a change of [`NCCL_WHEEL`] re-links.
fn setup_nccl(home: &Path) -> Result<()> {
    let dir = toolkit_dir()?;
    let version = NCCL_WHEEL.rsplit("==").next().context("NCCL pin")?;
    let done = dir.join(format!("nccl-{version}.complete"));
    if done.exists() {
        return Ok(());
    }
    let wheel = dir.join(format!("nccl-{version}"));
    eprintln!(
        "xtask cuda setup: installing {NCCL_WHEEL} into {} (about 300 MB, once)…",
        wheel.display()
    );
    if wheel.exists() {
        std::fs::remove_dir_all(&wheel).context("removing a partial NCCL install")?;
    }
    pip_install_into(&wheel, &[NCCL_WHEEL])?;
    let nccl = wheel.join("nvidia/nccl");
    for (from, to) in [
        (nccl.join("lib/libnccl.so.2"), home.join("lib/libnccl.so")),
        (nccl.join("include/nccl.h"), home.join("include/nccl.h")),
    ] {
        if !from.exists() {
            bail!("{} is missing from {NCCL_WHEEL}", from.display());
        }
        if to.symlink_metadata().is_ok() {
            std::fs::remove_file(&to).with_context(|| format!("replacing {}", to.display()))?;
        }
        std::os::unix::fs::symlink(&from, &to)
            .with_context(|| format!("linking {}", to.display()))?;
    }
    // Only the current pin counts as installed.
    for entry in std::fs::read_dir(&dir)? {
        let name = entry?.file_name();
        if name.to_string_lossy().ends_with(".complete") {
            std::fs::remove_file(dir.join(name))?;
        }
    }
    std::fs::write(&done, NCCL_WHEEL).context("marking the NCCL setup complete")?;
    Ok(())
}

/// A `libcuda.so` (soname `libcuda.so.1`) with an empty function for every driver symbol cudarc
/// declares: enough to link; at run time the driver's real library is loaded instead.
fn build_libcuda_stub(dir: &Path) -> Result<()> {
    let cudarc = package_dir("cudarc")?;
    let decls = cudarc.join("src/driver/sys/mod.rs");
    let text =
        std::fs::read_to_string(&decls).with_context(|| format!("reading {}", decls.display()))?;
    let mut names: Vec<&str> = text
        .split("fn ")
        .skip(1)
        .filter_map(|rest| rest.split('(').next())
        .map(str::trim)
        .filter(|n| n.starts_with("cu") && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .collect();
    names.sort_unstable();
    names.dedup();
    if names.len() < 100 {
        bail!(
            "found only {} driver functions in {}",
            names.len(),
            decls.display()
        );
    }
    std::fs::create_dir_all(dir)?;
    let source = dir.join("libcuda_stub.c");
    let body: String = names
        .iter()
        .map(|n| format!("void {n}(void) {{}}\n"))
        .collect();
    std::fs::write(&source, body)?;
    run(Command::new("gcc")
        .args(["-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o"])
        .arg(dir.join("libcuda.so"))
        .arg(&source))
}

/// The source folder of a dependency (fetched first, so that a fresh machine has it).
fn package_dir(name: &str) -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(&cargo).current_dir(root()).arg("fetch"))?;
    let out = Command::new(&cargo)
        .current_dir(root())
        .args(["metadata", "--format-version", "1", "--features", "cuda"])
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let manifest = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == name)
        .and_then(|p| p["manifest_path"].as_str())
        .with_context(|| format!("{name} is not among the dependencies of the CUDA build"))?;
    Ok(Path::new(manifest)
        .parent()
        .context("manifest without a folder")?
        .to_path_buf())
}

/// `cargo` with the toolkit's environment and the CUDA target directory.
fn cuda_cargo(home: &Path) -> Result<Command> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![home.join("bin")];
    paths.extend(std::env::split_paths(&path));
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root())
        .env("PATH", std::env::join_paths(paths)?)
        .env("CUDA_ROOT", home)
        .env("CUDA_HOME", home)
        .env("CUDA_PATH", home)
        .env("CUDA_COMPUTE_CAP", COMPUTE_CAP)
        .env("CUDAFORGE_THREADS", "2")
        .env("CARGO_TARGET_DIR", cuda_target_dir()?);
    Ok(cmd)
}

/// The CUDA build's target directory: `FLAMBEAU_CUDA_TARGET_DIR`, else
/// `~/.cache/flambeau-target-cuda` (never the CPU one: other flags, other cache).
fn cuda_target_dir() -> Result<PathBuf> {
    match std::env::var_os("FLAMBEAU_CUDA_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => Ok(PathBuf::from(dir)),
        _ => Ok(cache_dir()?.join("flambeau-target-cuda")),
    }
}

/// Clippy on the CUDA build of every crate, warnings as errors; in the release profile of the
/// bundle, so that the kernels nvcc builds serve both (see the module's notes).
fn check() -> Result<()> {
    let home = setup()?;
    eprintln!("xtask cuda check: clippy on the CUDA build (CUDA_COMPUTE_CAP={COMPUTE_CAP})");
    run(cuda_cargo(&home)?
        .args([
            "clippy",
            "--release",
            "--workspace",
            "--all-targets",
            "--all-features",
        ])
        .args(["--", "-D", "warnings"]))
}

/// The bundle's programs: (package, cargo target, file under `release/`, name in the bundle).
/// `flambeau` with NCCL (`--device cuda:0,1`; `nccl` implies `cuda`): it then needs
/// libnccl.so.2 at start-up, which the GPU machine's PyTorch has (nvidia/nccl/lib).
const PROGRAMS: &[(&str, [&str; 2], &str, &str)] = &[
    (
        "flambeau-cli",
        ["--bin", "flambeau"],
        "flambeau",
        "flambeau",
    ),
    (
        "flambeau",
        ["--example", "device_check"],
        "examples/device_check",
        "device_check",
    ),
    (
        "flambeau-vision",
        ["--example", "bench_train"],
        "examples/bench_train",
        "bench_train",
    ),
];

/// The features of the bundle's one build.
const BUNDLE_FEATURES: &str = "flambeau-cli/nccl,flambeau/cuda,flambeau-vision/cuda";

/// The scripts that travel with the binaries (to the bundle's top folder).
const SCRIPTS: &[&str] = &[
    "xtask/gpu/gpu-check.sh",
    "xtask/gpu/cuda_libs.py",
    "xtask/gpu/gpu_check.py",
    "xtask/bench/train_torch.py",
];

/// The `NEEDED` entries of an ELF file, from `readelf -d` (binutils, which `strip` needs too).
fn needed_libraries(file: &Path) -> Result<Vec<String>> {
    let out = Command::new("readelf")
        .arg("-d")
        .arg(file)
        .output()
        .context("running readelf -d")?;
    if !out.status.success() {
        bail!(
            "readelf -d {} failed: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // `0x… (NEEDED)             Shared library: [libcublas.so.13]`
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| Some(l.split_once('[')?.1.split_once(']')?.0.to_string()))
        .collect())
}

/// Binaries and scripts carried to a GPU machine; the CUDA libraries come from its PyTorch.
fn bundle() -> Result<()> {
    let home = setup()?;
    let started = std::time::Instant::now();
    let mut build = cuda_cargo(&home)?;
    build.args(["build", "--release", "--features", BUNDLE_FEATURES]);
    for (package, target, _, _) in PROGRAMS {
        build.args(["-p", package]).args(target);
    }
    run(&mut build)?;
    let release = cuda_target_dir()?.join("release");
    let out = root().join("target/gpu-bundle");
    if out.exists() {
        std::fs::remove_dir_all(&out).with_context(|| format!("clearing {}", out.display()))?;
    }
    std::fs::create_dir_all(&out)?;
    let mut libraries = String::from(
        "# The shared libraries each binary names (readelf -d, NEEDED); gpu-check.sh finds them\n\
         # in the machine's PyTorch install (libcuda.so.1 comes with the driver).\n",
    );
    for (_, _, from, to) in PROGRAMS {
        // Stripped, each still carries candle's kernels (~55 MB); xz makes them ~1/10 of that.
        run(Command::new("strip")
            .arg("-o")
            .arg(out.join(to))
            .arg(release.join(from)))?;
        libraries += &format!("{to}: {}\n", needed_libraries(&out.join(to))?.join(" "));
        run(Command::new("xz")
            .args(["-9", "--threads=0"])
            .arg(out.join(to)))?;
    }
    std::fs::write(out.join("runtime-libraries.txt"), libraries)?;
    for script in SCRIPTS {
        let from = root().join(script);
        let name = from.file_name().context("script name")?.to_owned();
        std::fs::copy(&from, out.join(name)).with_context(|| format!("copying {script}"))?;
    }
    // The notices travel with the binaries (they embed the plot's font), at the paths
    // NOTICE.md links to.
    std::fs::create_dir_all(out.join("licenses"))?;
    for notice in ["NOTICE.md", "licenses/UFL-1.0.txt"] {
        std::fs::copy(root().join(notice), out.join(notice))
            .with_context(|| format!("copying {notice}"))?;
    }
    let size = folder_size(&out)?;
    eprintln!(
        "xtask gpu bundle: {} ({:.1} MiB) in {:.0} s; on the GPU machine run ./gpu-check.sh \
         (./gpu-check.sh --preflight needs no GPU)",
        out.display(),
        size as f64 / (1 << 20) as f64,
        started.elapsed().as_secs_f64()
    );
    if size > 64 << 20 {
        bail!("the bundle is {size} bytes, over the 64 MiB a device call carries");
    }
    Ok(())
}

/// The bytes of every file under `dir`.
fn folder_size(dir: &Path) -> Result<u64> {
    let mut size = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        size += if meta.is_dir() {
            folder_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(size)
}

/// `pip install --no-deps --target DIR PACKAGES…` with the machine's Python: wheels unpacked
/// into a folder of their own, outside any environment.
fn pip_install_into(dir: &Path, packages: &[&str]) -> Result<()> {
    run(pip_install(Path::new("python3"))
        .arg("--root-user-action=ignore")
        .args(["--no-deps", "--target"])
        .arg(dir)
        .args(packages))
}
