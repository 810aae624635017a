"""Seed example 2: two weights, one data point (x=[10, 15], y=20, w=[5, 6]).

The learner's notebook cell, verbatim. By hand: f = 140, error = -120, loss = 14400,
gradient = -240 * -1 * [10, 15] = [2400, 3600].

What to look for in the report:
- tensors.csv, column value: error.grad = -240, output.grad = 240, w.grad = [2400, 3600];
- x is saved by DotBackward0 (an input: saving it costs no new bytes);
- error is saved by PowBackward0, and that slot is released right after PowBackward0 runs.
"""
import torch

x = torch.tensor([10, 15], dtype=torch.float32)
y = torch.tensor(20, dtype=torch.float32)
w = torch.tensor([5, 6], dtype=torch.float32, requires_grad=True)
output = x @ w
error = y - output
loss = error ** 2
output.retain_grad()
error.retain_grad()
loss.retain_grad()
loss.backward()
loss.grad, error.grad, output.grad, w.grad
