# The `cargo xtask bench train` workloads in PyTorch: torchvision ResNet, SGD with momentum,
# the same warm-up and median as flambeau's bench_train; prints one JSON line with the same fields
# (img_s, step_s, first_step_s, forward_s, backward_s, update_s, peak_mem_bytes, tf32, timer,
# device, threads). On CUDA the phases are timed with CUDA events and cuDNN picks its algorithms
# (cudnn.benchmark, as a tuned PyTorch run would); on the CPU with the wall clock.
# usage: train_torch.py ARCH train|eval BATCH SIZE STEPS THREADS [DEVICE]
import json
import statistics
import sys
import time

import torch
import torchvision

WARMUP = 3

arch, mode, batch, size, steps, threads = sys.argv[1:7]
device = torch.device(sys.argv[7] if len(sys.argv) > 7 else "cpu")
batch, size, steps, threads = int(batch), int(size), int(steps), int(threads)
cuda = device.type == "cuda"
torch.set_num_threads(threads)
torch.manual_seed(0)
if cuda:
    torch.backends.cudnn.benchmark = True
model = getattr(torchvision.models, arch)(num_classes=10).to(device)
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
x = torch.randn(batch, 3, size, size, device=device)
y = torch.arange(batch, device=device) % 10
train = mode == "train"
model.train(train)


class Clock:
    """Marks in time: CUDA events on the current stream, or the wall clock."""

    def mark(self):
        if cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    def secs(self, a, b):
        if cuda:
            b.synchronize()
            return a.elapsed_time(b) / 1e3
        return b - a


clock = Clock()
total, forward, backward, update = [], [], [], []
for i in range(WARMUP + steps):
    t0 = clock.mark()
    if train:
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        t1 = clock.mark()
        loss.backward()
        t2 = clock.mark()
        opt.step()
        t3 = clock.mark()
        total.append(clock.secs(t0, t3))
        forward.append(clock.secs(t0, t1))
        backward.append(clock.secs(t1, t2))
        update.append(clock.secs(t2, t3))
    else:
        with torch.inference_mode():
            model(x)
        total.append(clock.secs(t0, clock.mark()))


def after_warmup(v):
    return statistics.median(v[WARMUP:]) if len(v) > WARMUP else None


def tf32():
    if not cuda:
        return None
    try:
        return {"matmul": torch.backends.cuda.matmul.allow_tf32, "conv": torch.backends.cudnn.allow_tf32}
    except Exception:  # the older flags may go; the newer API says "tf32" when allowed
        return {
            "matmul": torch.backends.cuda.matmul.fp32_precision == "tf32",
            "conv": torch.backends.cudnn.conv.fp32_precision == "tf32",
        }


step = after_warmup(total)
print(
    json.dumps(
        {
            "img_s": batch / step,
            "step_s": step,
            "first_step_s": total[0],
            "forward_s": after_warmup(forward) if train else step,
            "backward_s": after_warmup(backward),
            "update_s": after_warmup(update),
            "peak_mem_bytes": torch.cuda.max_memory_allocated(device) if cuda else None,
            "tf32": tf32(),
            "timer": "cuda-events" if cuda else "wall",
            "device": str(device),
            "threads": torch.get_num_threads(),
        }
    )
)
