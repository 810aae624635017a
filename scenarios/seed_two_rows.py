"""Seed example 3: two rows of data, two weights, mean squared error.

x = [[10, 15], [30, 40]], y = [20, 25], w = [5, 6]. The learner's notebook cell,
verbatim. By hand: f = [140, 390], error = [-120, -365], loss = 73812.5,
gradient = 0.5 * ([2400, 3600] + [21900, 29200]) = [12150, 16400].

What to look for in the report:
- tensors.csv, column value: error_squared.grad = [0.5, 0.5], error.grad = [-120, -365],
  output.grad = [120, 365], w.grad = [12150, 16400];
- x is saved by MvBackward0.self at zero new bytes (it is an input);
- error is saved by PowBackward0.self; the slot is released right after PowBackward0,
  but the storage stays: the script still holds `error`;
- output is saved by nothing: backward of a subtraction needs no values;
- each flowing gradient (grad(error_squared), grad(error), grad(output)) is freed right
  after the node that consumes it; grad(loss), the 1 backward starts from, is held by
  the engine until backward ends; the retain_grad() copies stay to the end.
"""
import torch

x = torch.tensor([[10, 15], [30, 40]], dtype=torch.float32)
y = torch.tensor([20, 25], dtype=torch.float32)
w = torch.tensor([5, 6], dtype=torch.float32, requires_grad=True)
output = x @ w
error = y - output
error_squared = error ** 2
loss = torch.mean(error_squared)
output.retain_grad()
error.retain_grad()
error_squared.retain_grad()
loss.retain_grad()
loss.backward()
loss.grad, error_squared.grad, error.grad, output.grad, w.grad
output, error, error_squared, loss
