# A checkpoint written by `flambeau train`, opened with the PyTorch tutorial's recipe and trained on.
import sys

import torch
import torchvision

ckpt = torch.load(sys.argv[1])  # default settings (weights_only=True)
model = torchvision.models.resnet18(num_classes=10)
model.load_state_dict(ckpt["model_state_dict"])
optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9, weight_decay=5e-4, nesterov=True)
optimizer.load_state_dict(ckpt["optimizer_state_dict"])
scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=ckpt["args"]["epochs"])
scheduler.load_state_dict(ckpt["scheduler_state_dict"])
epoch = ckpt["epoch"]
loss = ckpt["loss"]

assert isinstance(epoch, int) and isinstance(loss, float), (epoch, loss)
state = optimizer.state_dict()["state"]
assert len(state) == len(list(model.parameters())), len(state)
assert all(s["momentum_buffer"].abs().sum() > 0 for s in state.values())
lr_before = optimizer.param_groups[0]["lr"]
assert abs(lr_before - scheduler.get_last_lr()[0]) < 1e-15

# Continue: one epoch of two batches, then the scheduler's epoch step.
model.train()
torch.manual_seed(0)
x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
before = model.fc.weight.detach().clone()
for _ in range(2):
    optimizer.zero_grad()
    out = torch.nn.functional.cross_entropy(model(x), y)
    out.backward()
    optimizer.step()
scheduler.step()
assert not torch.equal(before, model.fc.weight), "training did not change the weights"
assert torch.isfinite(out), out
print(f"epoch={epoch} step={ckpt['global_step']} lr={lr_before:.6g} next_lr={scheduler.get_last_lr()[0]:.6g} loss={out.item():.4f}")
