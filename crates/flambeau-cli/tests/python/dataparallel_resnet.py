# A ResNet-18 state dict saved from nn.DataParallel (every key prefixed with `module.`), as
# multi-GPU training scripts write it. Prints fc.bias so the test can check the weights arrived.
import sys

import torch
import torchvision

torch.manual_seed(0)
model = torch.nn.DataParallel(torchvision.models.resnet18(num_classes=10))
sd = model.state_dict()
assert all(k.startswith("module.") for k in sd)
torch.save(sd, sys.argv[1])
print("fc.bias=" + ",".join(f"{v:.6f}" for v in sd["module.fc.bias"].tolist()))
