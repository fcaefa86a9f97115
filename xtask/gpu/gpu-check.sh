#!/usr/bin/env bash
# flambeau on a GPU machine, in one run (a few minutes on an H100/H200): built by
# `cargo xtask gpu bundle`, carried with the binaries beside it. Needs the machine's PyTorch
# (with CUDA) for the CUDA libraries, the reference side of the benchmark and torch.load.
#   1. one seeded ResNet-18 training step on cpu and cuda:0, compared tensor by tensor
#   2. `flambeau train --device cuda:0`, `flambeau eval`, torch.load of the checkpoint with its
#      defaults, resume on the CPU and back on the GPU
#   3. ResNet-50 train (batch 128, 224², f32) and ResNet-18 eval img/s: flambeau vs PyTorch eager
#   4. data parallelism: `--replicas 2` on cuda:0 (host-staged) against `--replicas 1`, and
#      `--device cuda:0,1` (NCCL) when the binary has NCCL and the machine two GPUs
#   5. torchrun with one process: the rendezvous and NCCL path of multi-process training
set -uo pipefail
cd "$(dirname "$0")"
here=$PWD
status=0
# The binaries travel xz-compressed (the device tool carries 64 MiB); Python unpacks them.
for packed in *.xz; do
    [ -e "$packed" ] || continue
    python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" \
        "$packed" "${packed%.xz}" && chmod +x "${packed%.xz}" && rm "$packed"
done
step() { echo; echo "== $*"; }
fail() { echo "FAILED: $*"; status=1; }

nv=$(python3 -c "import nvidia, os; print(os.path.dirname(nvidia.__file__))" 2>/dev/null) \
    || { echo "no PyTorch with CUDA libraries (python3 -c 'import nvidia') on this machine"; exit 2; }
export LD_LIBRARY_PATH="$nv/cu13/lib:$nv/cublas/lib:$nv/curand/lib:$nv/cuda_runtime/lib:$nv/nccl/lib:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch; print('PyTorch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name(0))"
ldd ./flambeau | grep -E "not found" && fail "missing libraries (above)"

step "1. ResNet-18 training step: cpu vs cuda:0"
./device_check --device cuda:0 || fail "device check"

step "2. train on cuda:0, eval, open in PyTorch, resume on cpu and on cuda:0"
work=$(mktemp -d)
run="$work/run"
./flambeau train --device cuda:0 --epochs 1 --train-size 4096 --val-size 512 --batch-size 128 --out "$run" \
    || fail "train on cuda:0"
./flambeau eval "$run/last.pth" --device cuda:0 || fail "eval on cuda:0"
python3 - "$run/last.pth" <<'PY' || fail "torch.load"
import sys, torch, torchvision
ckpt = torch.load(sys.argv[1])  # defaults: weights_only=True, tensors land on the CPU
model = torchvision.models.resnet18(num_classes=10)
model.load_state_dict(ckpt["model_state_dict"])
print("torch.load + load_state_dict: ok, epoch", ckpt["epoch"])
PY
./flambeau train --device cpu --resume auto --epochs 2 --train-size 4096 --val-size 512 --batch-size 128 \
    --out "$run" --max-steps 40 || fail "resume on cpu"
./flambeau train --device cuda:0 --resume auto --epochs 2 --train-size 4096 --val-size 512 --batch-size 128 \
    --out "$run" || fail "resume on cuda:0"
rm -rf "$work"

step "3. img/s on cuda:0: flambeau vs PyTorch eager (median of 10 steps after 3 warm-up)"
bench() { # ARCH MODE BATCH SIZE
    local ours theirs
    ours=$(FLAMBEAU_BENCH_DEVICE=cuda:0 ./bench_train "$1" "$2" "$3" "$4" 10) || { fail "bench $*"; return; }
    theirs=$(python3 ./train_torch.py "$1" "$2" "$3" "$4" 10 1 cuda:0) || { fail "torch bench $*"; return; }
    python3 - "$1 $2 b$3 ${4}²" "$ours" "$theirs" <<'PY'
import json, sys
what, ours, theirs = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
print(f"{what}: flambeau {ours['img_s']:.0f} img/s, PyTorch {theirs['img_s']:.0f} img/s, ratio {ours['img_s'] / theirs['img_s']:.2f}x")
PY
}
bench resnet50 train 128 224
bench resnet18 eval 128 224

step "4. data parallelism: 2 replicas on cuda:0 (host-staged) vs 1; cuda:0,1 (NCCL) if possible"
work=$(mktemp -d)
small=(--epochs 1 --train-size 2048 --val-size 512 --batch-size 128 --seed 0)
last_row() { # RUN_DIR: the last epoch's metrics (train_loss train_acc val_loss val_acc)
    python3 - "$1/metrics.csv" <<'PY'
import csv, sys
row = list(csv.DictReader(open(sys.argv[1])))[-1]
print(" ".join(f"{k}={float(row[k]):.4f}" for k in ("train_loss", "train_acc", "val_loss", "val_acc")))
PY
}
dp_run() { # NAME ARGS…: one small training run, then its final metrics
    local name=$1; shift
    ./flambeau train "${small[@]}" "$@" --out "$work/$name" > "$work/$name.log" 2>&1 \
        || { tail -20 "$work/$name.log"; fail "train $*"; return; }
    grep -iE "replica" "$work/$name.log" | head -3
    echo "$name ($*): $(last_row "$work/$name")"
}
dp_run one --device cuda:0 --replicas 1
dp_run two --device cuda:0 --replicas 2
if [ -f "$work/one/metrics.csv" ] && [ -f "$work/two/metrics.csv" ]; then
    python3 - "$work/one/metrics.csv" "$work/two/metrics.csv" <<'PY' || fail "2 replicas far from 1"
import csv, sys
one, two = (list(csv.DictReader(open(p)))[-1] for p in sys.argv[1:])
d = abs(float(one["train_loss"]) - float(two["train_loss"])) / max(float(one["train_loss"]), 1e-9)
# Not equal: batch norm takes its statistics per replica's shard (64 samples, not 128).
print(f"train_loss 1 vs 2 replicas: relative difference {d:.3f} (per-shard batch norm: close, not equal)")
sys.exit(0 if d < 0.25 else 1)
PY
fi
gpus=$(nvidia-smi -L | grep -c "^GPU")
if ! ldd ./flambeau | grep -q libnccl; then
    echo "skipped --device cuda:0,1: this flambeau was built without the nccl feature"
elif [ "$gpus" -lt 2 ]; then
    echo "skipped --device cuda:0,1 (NCCL): this machine has $gpus GPU(s)"
else
    dp_run nccl --device cuda:0,1
fi

step "5. torchrun: one process through NCCL (TCPStore rendezvous, id exchange, communicator)"
if ! ldd ./flambeau | grep -q libnccl; then
    echo "skipped: this flambeau was built without the nccl feature"
elif ! python3 -c "import torch.distributed.run" 2>/dev/null; then
    echo "skipped: no torchrun (torch.distributed.run) in this Python"
else
    python3 -m torch.distributed.run --nproc-per-node 1 --master-port 29561 --no-python \
        ./flambeau train --device cuda "${small[@]}" --out "$work/torchrun" > "$work/torchrun.log" 2>&1 \
        || { tail -20 "$work/torchrun.log"; fail "torchrun"; }
    grep -E "distributed:|epoch 1/1" "$work/torchrun.log" | head -3
    grep -q "distributed: 1 processes launched by torchrun" "$work/torchrun.log" \
        || fail "torchrun: the process did not join through NCCL"
fi
rm -rf "$work"

echo
[ $status -eq 0 ] && echo "gpu-check: all passed" || echo "gpu-check: FAILED (see above)"
exit $status
