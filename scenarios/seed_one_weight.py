"""Seed example 1: one weight, one data point (x=10, y=20, w=5), squared error.

The learner's notebook cell, verbatim. By hand: error = -30, loss = 900,
d loss/d w = 2 * error * (-x) = 600.

What to look for in the report:
- tensors.csv, column value: loss.grad = 1, error.grad = -60, output.grad = 60,
  w.grad = 600 (the hand derivation, line by line);
- saved_by: x is saved by MulBackward0 (to compute the gradient for w it needs x),
  error by PowBackward0 (d/de e^2 = 2e needs e); output is saved by nothing;
- every gradient handed between nodes is freed right after the node that consumes it,
  except grad(loss), the 1 backward starts from, which the engine holds until backward
  ends; the retain_grad() copies live to the end.
"""
import torch

x = torch.tensor(10, dtype=torch.float32)
y = torch.tensor(20, dtype=torch.float32)
w = torch.tensor(5, dtype=torch.float32, requires_grad=True)
output = x * w
error = y - output
loss = error ** 2
output.retain_grad()
error.retain_grad()
loss.retain_grad()
loss.backward()
loss.grad, error.grad, output.grad, w.grad
