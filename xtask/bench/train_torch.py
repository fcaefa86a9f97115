# The `cargo xtask bench train` workloads in PyTorch: torchvision ResNet, SGD with momentum,
# the same warm-up and median as flambeau's bench_train; prints one JSON line.
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
torch.set_num_threads(threads)
torch.manual_seed(0)
model = getattr(torchvision.models, arch)(num_classes=10).to(device)
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
x = torch.randn(batch, 3, size, size, device=device)
y = torch.arange(batch, device=device) % 10
train = mode == "train"
model.train(train)

times = []
for i in range(WARMUP + steps):
    t0 = time.perf_counter()
    if train:
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    else:
        with torch.inference_mode():
            model(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    if i >= WARMUP:
        times.append(time.perf_counter() - t0)
step = statistics.median(times)
print(json.dumps({"img_s": batch / step, "step_s": step, "threads": torch.get_num_threads()}))
