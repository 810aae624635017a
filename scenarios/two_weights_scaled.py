"""Seed example 2 scaled up: one data point with d features and d weights.

output = x @ w (a dot product) with d features. Only the weights and their gradient grow
with d; the error and loss stay single numbers.

What to look for in the report:
- x (d values) is saved by DotBackward0 to compute w's gradient: an input, no new bytes;
- w.grad is as large as w (d values), the only big tensor backward creates;
- error is saved by PowBackward0 but is one number: activations are tiny here.
"""
import torch


def main(d: int = 20_000_000, dtype: str = "float32", device: str = "cpu", retain: bool = False, seed: int = 0):
    torch.manual_seed(seed)
    dt = getattr(torch, dtype)
    x = torch.randn(d, dtype=dt, device=device)
    y = torch.tensor(20.0, dtype=dt, device=device)
    w = torch.randn(d, dtype=dt, device=device, requires_grad=True)
    output = x @ w
    error = y - output
    loss = error ** 2
    if retain:
        for t in (output, error, loss):
            t.retain_grad()
    loss.backward()
    return w.grad
