#!/usr/bin/env bash
# flambeau on a GPU machine, in one run (a few minutes on an H100/H200): built by
# `cargo xtask gpu bundle`, carried with the binaries beside it. Needs the machine's PyTorch
# (with CUDA) for the CUDA libraries, the reference side of the benchmark and torch.load.
#   1. one seeded ResNet-18 training step on cpu and cuda:0, compared tensor by tensor
#   2. `flambeau train --device cuda:0`, `flambeau eval`, torch.load of the checkpoint with its
#      defaults, resume on the CPU and back on the GPU
#   3. ResNet-50 train (batch 128, 224², f32) and ResNet-18 eval img/s: flambeau vs PyTorch eager
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

echo
[ $status -eq 0 ] && echo "gpu-check: all passed" || echo "gpu-check: FAILED (see above)"
exit $status
