#!/usr/bin/env bash
# flambeau on a GPU machine, in one run (under 5 minutes on an H100/H200): built by
# `cargo xtask gpu bundle`, carried with the binaries beside it. Needs the machine's PyTorch
# (with CUDA) for the CUDA libraries, the reference side of the benchmark and torch.load.
#   1. device_check: seeded training checks (ResNet-18 steps, optimizers, data loader,
#      replicas) on cpu and cuda:0, compared tensor by tensor
#   2. `flambeau train --device cuda:0`, `flambeau eval`, torch.load of the checkpoint with its
#      defaults, resume on the CPU and back on the GPU
#   3. ResNet-50 train (batch 128, 224², f32) and ResNet-18 eval img/s: PyTorch eager, then
#      flambeau (PyTorch runs even when flambeau fails)
#   4. data parallelism: `--replicas 2` on cuda:0 (host-staged) against `--replicas 1`, and
#      `--device cuda:0,1` (NCCL) when the binary has NCCL and the machine two GPUs
#   5. torchrun with one process: the rendezvous and NCCL path of multi-process training
#
# usage: ./gpu-check.sh [--preflight]
#   --preflight   only what needs no GPU: unpack the binaries, find the libraries they need in
#                 this Python's PyTorch install (prints the LD_LIBRARY_PATH=… line to use), ldd
#                 each binary, print the versions; exit 0 when everything but the driver's
#                 libcuda.so.1 resolves. CI runs this on CPU-only machines.
# Without --preflight and without a GPU it exits 2. Every step runs under `timeout`, the whole
# run within GPU_CHECK_BUDGET_S seconds (default 280), and a table of the steps ends the output.
# PYTHON names the Python with PyTorch (default python3).
set -uo pipefail  # no -e: a failing step is recorded and the run goes on to the summary
cd "$(dirname "$0")" || exit 2
preflight=0
case "${1:-}" in
    --preflight) preflight=1 ;;
    "") ;;
    *) echo "usage: $0 [--preflight]" >&2; exit 2 ;;
esac
py=${PYTHON:-python3}
budget=${GPU_CHECK_BUDGET_S:-280}
status=0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
steps_tsv="$work/steps.tsv"
: > "$steps_tsv"
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
start=$(now)
section() { echo; echo "== $*"; }
fail() { echo "FAILED: $*"; status=1; }

section "libraries (no GPU needed)"
# The binaries travel xz-compressed (the device tool carries 64 MiB); Python unpacks them.
for packed in *.xz; do
    [ -e "$packed" ] || continue
    if ! { "$py" -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" \
        "$packed" "${packed%.xz}" && chmod +x "${packed%.xz}" && rm "$packed"; }; then
        fail "unpacking $packed"
    fi
done
binaries=()
for b in flambeau device_check bench_train; do
    if [ -x "$b" ]; then binaries+=("./$b"); else fail "no ./$b in $PWD"; fi
done
libs_ok=1
ld_line=""
if [ ${#binaries[@]} -gt 0 ]; then
    # Searches nvidia.__path__, torch/lib and the nvidia-* RECORDs; the LD_LIBRARY_PATH line on
    # stdout, the search and ldd's verdict on stderr.
    ld_line=$("$py" ./cuda_libs.py --check "${binaries[@]}") || libs_ok=0
fi
if [ -n "$ld_line" ]; then
    echo "$ld_line"
    export "${ld_line?}"
fi
[ $libs_ok -eq 1 ] || fail "unresolved libraries (above)"
section "versions"
"$py" ./gpu_check.py versions || fail "no usable PyTorch in $py"
[ -f runtime-libraries.txt ] && { echo "NEEDED at bundle time:"; sed 's/^/  /' runtime-libraries.txt; }

if [ $preflight -eq 1 ]; then
    echo
    if [ $status -eq 0 ]; then
        echo "gpu-check --preflight: passed in $(since "$start") s (run ./gpu-check.sh on a GPU machine)"
    else
        echo "gpu-check --preflight: FAILED (see above)"
    fi
    exit $status
fi

if ! command -v nvidia-smi > /dev/null || ! nvidia-smi -L > /dev/null 2>&1; then
    echo
    echo "gpu-check: no GPU here (nvidia-smi is missing or sees no device): nothing run."
    echo "           ./gpu-check.sh --preflight checks the binaries and libraries without one."
    exit 2
fi

section "GPU"
nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv,noheader
echo "driver's $(nvidia-smi | grep -o 'CUDA Version: [0-9.]*' | head -1)"
gpus=$(nvidia-smi -L | grep -c "^GPU")

mem_used() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 | head -1; }
# run_step NAME LIMIT CMD…: CMD under `timeout`, capped to what is left of the budget, GPU 0's
# memory sampled meanwhile; one row of the summary. Returns CMD's status.
run_step() {
    local name=$1 limit=$2 left rc t0 base sampler peak result
    shift 2
    left=$(awk -v b="$budget" -v s="$start" -v n="$(now)" 'BEGIN { printf "%d", b - (n - s) }')
    if [ "$left" -lt 10 ]; then
        echo "skipped $name: the ${budget} s budget is spent" >&2
        printf '%s\tskipped\t0\t-\n' "$name" >> "$steps_tsv"
        status=1
        return 1
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    base=$(mem_used)
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 -lms 200 \
        > "$work/mem.$$" 2>/dev/null &
    sampler=$!
    t0=$(now)
    timeout -k 5 "$limit" "$@"
    rc=$?
    kill "$sampler" 2>/dev/null
    wait "$sampler" 2>/dev/null
    peak=$("$py" ./gpu_check.py mem-peak "$work/mem.$$" "${base:-0}")
    case $rc in
        0) result=pass ;;
        124 | 137) result="timeout"; echo "TIMEOUT after ${limit} s: $name" >&2 ;;
        *) result=fail ;;
    esac
    printf '%s\t%s\t%s\t%s\n' "$name" "$result" "$(since "$t0")" "$peak" >> "$steps_tsv"
    [ $rc -eq 0 ] || status=1
    return $rc
}

section "1. device_check: training checks, cpu vs cuda:0"
run_step "1 device_check cpu vs cuda:0" 120 ./device_check --device cuda:0 || fail "device check"

section "2. train on cuda:0, eval, open in PyTorch, resume on cpu and on cuda:0"
run="$work/run"
data=(--train-size 4096 --val-size 512 --batch-size 128)
run_step "2 train cuda:0" 60 ./flambeau train --device cuda:0 --epochs 1 "${data[@]}" --out "$run" \
    || fail "train on cuda:0"
if [ -f "$run/last.pth" ]; then
    run_step "2 eval cuda:0" 30 ./flambeau eval "$run/last.pth" --device cuda:0 || fail "eval on cuda:0"
    run_step "2 torch.load" 30 "$py" ./gpu_check.py torch-load "$run/last.pth" || fail "torch.load"
    run_step "2 resume cpu" 60 ./flambeau train --device cpu --resume auto --epochs 2 "${data[@]}" \
        --out "$run" --max-steps 40 || fail "resume on cpu"
    run_step "2 resume cuda:0" 45 ./flambeau train --device cuda:0 --resume auto --epochs 2 "${data[@]}" \
        --out "$run" || fail "resume on cuda:0"
fi

section "3. img/s on cuda:0: PyTorch eager, then flambeau (median of 10 steps after 3 warm-up)"
bench() { # ARCH MODE BATCH SIZE
    local tag="$1-$2" theirs="$work/torch-$1-$2.json" ours="$work/flambeau-$1-$2.json"
    run_step "3 PyTorch $tag" 60 "$py" ./train_torch.py "$1" "$2" "$3" "$4" 10 1 cuda:0 > "$theirs" \
        || fail "PyTorch bench $*"
    FLAMBEAU_BENCH_DEVICE=cuda:0 run_step "3 flambeau $tag" 75 ./bench_train "$1" "$2" "$3" "$4" 10 \
        > "$ours" || fail "flambeau bench $*"
    cat "$theirs" "$ours"
    "$py" ./gpu_check.py bench "$1 $2, batch $3, ${4}x$4" "$ours" "$theirs"
}
bench resnet50 train 128 224
bench resnet18 eval 128 224

section "4. data parallelism: 2 replicas on cuda:0 (host-staged) vs 1; cuda:0,1 (NCCL) if possible"
small=(--epochs 1 --train-size 2048 --val-size 512 --batch-size 128 --seed 0)
dp_run() { # NAME ARGS…: one small training run, then its final metrics
    local name=$1
    shift
    run_step "4 train $*" 60 ./flambeau train "${small[@]}" "$@" --out "$work/$name" > "$work/$name.log" 2>&1 \
        || { tail -20 "$work/$name.log"; fail "train $*"; return; }
    grep -iE "replica" "$work/$name.log" | head -3
    echo "$name ($*): $("$py" ./gpu_check.py last-row "$work/$name/metrics.csv")"
}
dp_run one --device cuda:0 --replicas 1
dp_run two --device cuda:0 --replicas 2
if [ -f "$work/one/metrics.csv" ] && [ -f "$work/two/metrics.csv" ]; then
    "$py" ./gpu_check.py dp-compare "$work/one/metrics.csv" "$work/two/metrics.csv" \
        || fail "2 replicas far from 1"
fi
has_nccl=0
ldd ./flambeau | grep -q libnccl && has_nccl=1
if [ $has_nccl -eq 0 ]; then
    echo "skipped --device cuda:0,1: this flambeau was built without the nccl feature"
elif [ "$gpus" -lt 2 ]; then
    echo "skipped --device cuda:0,1 (NCCL): this machine has $gpus GPU(s)"
else
    dp_run nccl --device cuda:0,1
fi

section "5. torchrun: one process through NCCL (TCPStore rendezvous, id exchange, communicator)"
if [ $has_nccl -eq 0 ]; then
    echo "skipped: this flambeau was built without the nccl feature"
elif ! "$py" -c "import torch.distributed.run" 2>/dev/null; then
    echo "skipped: no torchrun (torch.distributed.run) in this Python"
else
    run_step "5 torchrun 1 process" 60 "$py" -m torch.distributed.run --nproc-per-node 1 --master-port 29561 \
        --no-python ./flambeau train --device cuda "${small[@]}" --out "$work/torchrun" \
        > "$work/torchrun.log" 2>&1 || { tail -20 "$work/torchrun.log"; fail "torchrun"; }
    grep -E "distributed:|epoch 1/1" "$work/torchrun.log" | head -3
    grep -q "distributed: 1 processes launched by torchrun" "$work/torchrun.log" \
        || fail "torchrun: the process did not join through NCCL"
fi

section "summary (budget ${budget} s, whole run $(since "$start") s)"
"$py" ./gpu_check.py summary "$steps_tsv"
echo
if [ $status -eq 0 ]; then echo "gpu-check: all passed"; else echo "gpu-check: FAILED (see above)"; fi
exit $status
