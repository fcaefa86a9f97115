"""Find the shared libraries the bundle's binaries need in this machine's Python install.

usage: cuda_libs.py [--check] BINARY...

Reads each binary's NEEDED entries (from the ELF file itself: no binutils needed), then looks for
them, and for what they need in turn, in:
  - every folder `*/lib` under every entry of `nvidia.__path__` (CUDA-13 wheels make `nvidia` a
    namespace package: no `nvidia.__file__`; cu13/lib, cublas/lib, cudnn/lib, nccl/lib, …),
  - `torch/lib`,
  - the folders of the `.so` files listed in the RECORD of every installed nvidia-* package.
Prints `LD_LIBRARY_PATH=…` (the folders that hold what was found, then the old value) on its own
line of stdout; everything else goes to stderr. Python errors are printed, not swallowed.
With --check, also runs `ldd` on each binary under that LD_LIBRARY_PATH and fails (exit 1) on
any library left unresolved other than the driver's libcuda.so.1, naming it, the folders
searched and the pip package that provides it.
"""

import os
import struct
import subprocess
import sys

# The driver's library: never in a pip package, present only where there is a GPU driver.
DRIVER = "libcuda.so.1"

# Which pip package ships which library (CUDA 13 wheels), for the error message.
PROVIDERS = {
    "libcublas.so.13": "nvidia-cublas",
    "libcublasLt.so.13": "nvidia-cublas",
    "libcudart.so.13": "nvidia-cuda-runtime",
    "libcurand.so.10": "nvidia-curand",
    "libnvrtc.so.13": "nvidia-cuda-nvrtc",
    "libnccl.so.2": "nvidia-nccl-cu13",
    "libcudnn.so.9": "nvidia-cudnn-cu13",
    DRIVER: "the NVIDIA driver (no pip package)",
}


def log(*args):
    print(*args, file=sys.stderr)


def is_library(name):
    return name.endswith(".so") or ".so." in name


def needed(path):
    """The DT_NEEDED names of a 64-bit little-endian ELF file."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError(f"{path}: not a 64-bit little-endian ELF file")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names = []
    for sh in sections:
        if sh[1] != 6:  # SHT_DYNAMIC
            continue
        strtab = sections[sh[6]]  # sh_link: the section of its strings
        stroff = strtab[4]
        for off in range(sh[4], sh[4] + sh[5], 16):
            tag, val = struct.unpack_from("<qQ", data, off)
            if tag == 0:
                break
            if tag == 1:  # DT_NEEDED
                end = data.index(b"\0", stroff + val)
                names.append(data[stroff + val : end].decode())
    return names


def candidate_folders():
    """(folder, where it came from) in search order, each folder once."""
    seen, out = set(), []

    def add(folder, why):
        folder = os.path.realpath(folder)
        if folder not in seen and os.path.isdir(folder):
            seen.add(folder)
            out.append((folder, why))

    try:
        import nvidia

        for root in list(nvidia.__path__):
            for sub in sorted(os.listdir(root)):
                for lib in ("lib", "lib64"):
                    add(os.path.join(root, sub, lib), "nvidia." + sub)
    except Exception as e:  # noqa: BLE001 - any failure is reported, the search goes on
        log(f"cuda_libs: `import nvidia` failed: {type(e).__name__}: {e}")
    try:
        import importlib.util

        spec = importlib.util.find_spec("torch")  # without importing torch (slow, loads CUDA)
        if spec is None or not spec.submodule_search_locations:
            log("cuda_libs: no `torch` package in this Python")
        else:
            for root in spec.submodule_search_locations:
                add(os.path.join(root, "lib"), "torch/lib")
    except Exception as e:  # noqa: BLE001
        log(f"cuda_libs: looking for torch failed: {type(e).__name__}: {e}")
    try:
        import importlib.metadata as md

        for dist in md.distributions():
            name = (dist.metadata["Name"] or "").lower().replace("_", "-")
            if not name.startswith("nvidia-"):
                continue
            for f in dist.files or []:
                if is_library(f.name):
                    add(os.path.dirname(str(dist.locate_file(f))), f"RECORD of {name}")
    except Exception as e:  # noqa: BLE001
        log(f"cuda_libs: reading the nvidia-* RECORDs failed: {type(e).__name__}: {e}")
    return out


def owners():
    """Library file name -> pip package, from the RECORDs."""
    out = {}
    try:
        import importlib.metadata as md

        for dist in md.distributions():
            name = (dist.metadata["Name"] or "").lower()
            if name.startswith("nvidia") or name == "torch":
                for f in dist.files or []:
                    if is_library(f.name):
                        out.setdefault(f.name, f"{dist.metadata['Name']} {dist.version}")
    except Exception as e:  # noqa: BLE001
        log(f"cuda_libs: reading package RECORDs failed: {type(e).__name__}: {e}")
    return out


def main(argv):
    check = "--check" in argv
    binaries = [a for a in argv if not a.startswith("--")]
    if not binaries:
        log(__doc__)
        return 2
    folders = candidate_folders()
    log(f"cuda_libs: Python {sys.version.split()[0]} at {sys.executable}")
    log(f"cuda_libs: {len(folders)} folders searched:")
    for folder, why in folders:
        log(f"  {folder}  ({why})")
    who = owners()
    found, missing, todo, done = {}, {}, [], set()
    for b in binaries:
        todo += [(n, b) for n in needed(b)]
    while todo:
        name, by = todo.pop(0)
        if name in done:
            continue
        done.add(name)
        for folder, _ in folders:
            path = os.path.join(folder, name)
            if os.path.exists(path):
                found[name] = folder
                try:
                    todo += [(n, name) for n in needed(path)]
                except (OSError, ValueError) as e:
                    log(f"cuda_libs: reading {path}: {e}")
                break
        else:
            missing[name] = by
    for name, folder in sorted(found.items()):
        log(f"  {name:<22} {folder}  [{who.get(name, '?')}]")
    use = []
    for name in sorted(found):
        if found[name] not in use:
            use.append(found[name])
    old = os.environ.get("LD_LIBRARY_PATH", "")
    ld_path = ":".join(use + ([old] if old else []))
    print(f"LD_LIBRARY_PATH={ld_path}", flush=True)
    if not check:
        return 0
    env = dict(os.environ, LD_LIBRARY_PATH=ld_path)
    failed = False
    for b in binaries:
        out = subprocess.run(["ldd", b], env=env, capture_output=True, text=True)
        lines = (out.stdout + out.stderr).splitlines()
        unresolved = [l.split()[0] for l in lines if "not found" in l]
        cuda = [l.strip() for l in lines if any(k in l for k in ("cu", "nccl", "nvrtc"))]
        log(f"ldd {b}:")
        for l in cuda:
            log(f"    {l}")
        for lib in unresolved:
            if lib == DRIVER:
                log(f"  {DRIVER}: not found (expected without the NVIDIA driver; a GPU machine has it)")
                continue
            failed = True
            via = missing.get(lib)
            through = f", through {via}" if via and via not in binaries else ""
            log(
                f"  MISSING {lib} (needed by {b}{through}): not in any of the "
                f"{len(folders)} folders above nor the system's; it comes with the pip package "
                f"{PROVIDERS.get(lib, 'that ships ' + lib)}"
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
