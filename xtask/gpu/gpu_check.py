"""The Python side of gpu-check.sh: versions, benchmark comparisons, checkpoint and metrics
checks, GPU memory peaks and the summary table. One subcommand per use:

  versions                      Python, PyTorch, its CUDA/cuDNN, the GPU and PyTorch's TF32 flags
  bench WHAT OURS.json THEIRS.json   flambeau against PyTorch, every field of both JSON lines
  torch-load CKPT               torch.load with its defaults + load_state_dict into a ResNet-18
  last-row METRICS.csv          the last epoch's losses and accuracies
  dp-compare ONE.csv TWO.csv    1 vs 2 replicas: the relative train-loss difference (< 0.25)
  mem-peak SAMPLES BASELINE     the peak of nvidia-smi memory.used samples (MiB) above BASELINE
  summary STEPS.tsv             the table of steps: name, result, seconds, peak GPU memory
"""

import csv
import json
import sys


def versions():
    print(f"Python {sys.version.split()[0]} ({sys.executable})")
    try:
        import torch
    except Exception as e:  # noqa: BLE001
        print(f"PyTorch: cannot import: {type(e).__name__}: {e}")
        return 1
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    print(f"PyTorch {torch.__version__}, built for CUDA {torch.version.cuda}, cuDNN {cudnn}")
    try:
        import torchvision

        print(f"torchvision {torchvision.__version__}")
    except Exception as e:  # noqa: BLE001
        print(f"torchvision: cannot import: {type(e).__name__}: {e}")
    print(
        "PyTorch TF32 defaults: matmul",
        torch.backends.cuda.matmul.allow_tf32,
        "conv (cuDNN)",
        torch.backends.cudnn.allow_tf32,
    )
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            print(f"cuda:{i} {p.name}, {p.total_memory / 2**30:.0f} GiB, sm_{p.major}{p.minor}")
    else:
        print("PyTorch sees no GPU")
    return 0


def fmt(v, scale=1.0, unit=""):
    if v is None:
        return "-"
    if isinstance(v, (int, float)):
        return f"{v * scale:.1f}{unit}"
    return str(v)


def bench(what, ours_path, theirs_path):
    def load(path):
        try:
            with open(path) as f:
                lines = [l for l in f if l.startswith("{")]
            return json.loads(lines[-1]) if lines else None
        except OSError:
            return None

    ours, theirs = load(ours_path), load(theirs_path)
    print(f"{what}:")
    rows = [
        ("img/s", "img_s", 1, ""),
        ("step (median)", "step_s", 1e3, " ms"),
        ("first step (PTX JIT, cuDNN search)", "first_step_s", 1e3, " ms"),
        ("forward", "forward_s", 1e3, " ms"),
        ("backward", "backward_s", 1e3, " ms"),
        ("optimizer", "update_s", 1e3, " ms"),
        ("peak GPU memory", "peak_mem_bytes", 2**-20, " MiB"),
        ("TF32", "tf32", 1, ""),
        ("timer", "timer", 1, ""),
    ]
    print(f"  {'':<36} {'flambeau':>16} {'PyTorch':>16}")
    for label, key, scale, unit in rows:
        a = fmt((ours or {}).get(key), scale, unit) if ours else "failed"
        b = fmt((theirs or {}).get(key), scale, unit) if theirs else "failed"
        print(f"  {label:<36} {a:>16} {b:>16}")
    if ours and theirs:
        print(f"  flambeau / PyTorch img/s: {ours['img_s'] / theirs['img_s']:.2f}x")
    return 0 if ours and theirs else 1


def torch_load(path):
    import torch
    import torchvision

    ckpt = torch.load(path)  # defaults: weights_only=True, tensors land on the CPU
    model = torchvision.models.resnet18(num_classes=10)
    model.load_state_dict(ckpt["model_state_dict"])
    print("torch.load + load_state_dict: ok, epoch", ckpt["epoch"])
    return 0


def last_row(path):
    row = list(csv.DictReader(open(path)))[-1]
    keys = ("train_loss", "train_acc", "val_loss", "val_acc")
    print(" ".join(f"{k}={float(row[k]):.4f}" for k in keys))
    return 0


def dp_compare(one_path, two_path):
    one, two = (list(csv.DictReader(open(p)))[-1] for p in (one_path, two_path))
    a, b = float(one["train_loss"]), float(two["train_loss"])
    d = abs(a - b) / max(a, 1e-9)
    # Not equal: batch norm takes its statistics per replica's shard (64 samples, not 128).
    print(f"train_loss 1 vs 2 replicas: relative difference {d:.3f} (per-shard batch norm: close, not equal)")
    return 0 if d < 0.25 else 1


def mem_peak(samples, baseline):
    values = []
    try:
        for line in open(samples):
            first = line.split(",")[0].strip()
            if first.isdigit():
                values.append(int(first))
    except OSError:
        pass
    print(f"{max(values) - int(baseline)}" if values else "-")
    return 0


def summary(path):
    rows = [l.rstrip("\n").split("\t") for l in open(path) if l.strip()]
    width = max([len(r[0]) for r in rows] + [4])
    print(f"{'step':<{width}}  {'result':<8} {'seconds':>8} {'peak GPU MiB':>13}")
    for r in rows:
        r += ["-"] * (4 - len(r))
        print(f"{r[0]:<{width}}  {r[1]:<8} {r[2]:>8} {r[3]:>13}")
    total = sum(float(r[2]) for r in rows if r[2].replace(".", "", 1).isdigit())
    print(f"{'total':<{width}}  {'':<8} {total:>8.0f}")
    return 0


COMMANDS = {
    "versions": versions,
    "bench": bench,
    "torch-load": torch_load,
    "last-row": last_row,
    "dp-compare": dp_compare,
    "mem-peak": mem_peak,
    "summary": summary,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(COMMANDS[sys.argv[1]](*sys.argv[2:]))
