# A training checkpoint as torchvision's reference script writes it (model / optimizer /
# lr_scheduler / epoch / args): ResNet-18, SGD with momentum, StepLR, one epoch of two batches.
import argparse
import sys

import torch
import torchvision

torch.manual_seed(0)
model = torchvision.models.resnet18(num_classes=10)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
model.train()
for _ in range(2):
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
scheduler.step()
args = argparse.Namespace(model="resnet18", lr=0.1, epochs=2)
torch.save(
    {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": scheduler.state_dict(),
        "epoch": 0,
        "args": args,
    },
    sys.argv[1],
)
print(f"fc.bias[0]={model.fc.bias[0].item():.9g} lr={optimizer.param_groups[0]['lr']}")
