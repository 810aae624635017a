"""A small multi-layer perceptron: Linear -> ReLU -> ... -> Linear, mean squared error.

What to look for in the report:
- parameters (model.0.weight, ...) and their .grad (param_grad) of the same size;
- each Linear saves its input (AddmmBackward0) and each ReLU its output
  (ReluBackward0.result): these activations are what backward needs, and each slot is
  released right after its node runs;
- the peak: at the start of backward, when every activation is still alive.
"""
import torch
from torch import nn


def main(batch: int = 4096, width: int = 1024, depth: int = 3, features: int = 256, device: str = "cpu", seed: int = 0):
    torch.manual_seed(seed)
    layers, size = [], features
    for _ in range(depth):
        layers += [nn.Linear(size, width, device=device), nn.ReLU()]
        size = width
    model = nn.Sequential(*layers, nn.Linear(size, 1, device=device))   # made on the device: no .to() copy
    x = torch.randn(batch, features, device=device)
    y = torch.randn(batch, 1, device=device)
    prediction = model(x)
    loss = nn.functional.mse_loss(prediction, y)
    loss.backward()
    return loss
