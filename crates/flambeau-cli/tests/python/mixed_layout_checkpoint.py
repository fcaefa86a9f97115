# A training checkpoint in the common mixed layout (model_state_dict / optimizer_state_dict /
# lr_scheduler / epoch): ResNet-18, SGD with momentum, StepLR(step_size=2, gamma=0.3), one epoch.
# Prints the learning rate after each of the next epochs' scheduler steps, as JSON.
import json
import sys

import torch
import torchvision

torch.manual_seed(0)
model = torchvision.models.resnet18(num_classes=10)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.3)
model.train()
for _ in range(2):
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
scheduler.step()
torch.save(
    {
        "epoch": 0,
        "model_state_dict": model.state_dict(),
        "optimizer_state_dict": optimizer.state_dict(),
        "lr_scheduler": scheduler.state_dict(),
    },
    sys.argv[1],
)
lrs = []
for _ in range(int(sys.argv[2])):
    scheduler.step()
    lrs.append(scheduler.get_last_lr()[0])
print(json.dumps({"next": lrs}))
