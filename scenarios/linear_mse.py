"""Seed example 3 scaled up: n rows of d features, d weights, mean squared error.

output = x @ w, error = y - output, loss = mean(error ** 2): the two-rows example with
n rows. With the defaults x is n * d * 4 bytes = 204.8 MB (float32).

What to look for in the report:
- x dominates memory and is saved by MvBackward0, but it is an input: keeping it for
  backward costs no new bytes;
- error (n values) is the only activation; output and error_squared are intermediates;
- the gradients that flow (grad(error_squared), grad(error), grad(output)) are n values
  each and each is freed right after the node that consumes it; w.grad is d values.
Scale it: `-p n=1000000 -p d=256` makes x about 1 GB.
"""
import torch


def main(n: int = 200_000, d: int = 256, dtype: str = "float32", device: str = "cpu", retain: bool = False, seed: int = 0):
    torch.manual_seed(seed)
    dt = getattr(torch, dtype)
    x = torch.randn(n, d, dtype=dt, device=device)
    y = torch.randn(n, dtype=dt, device=device)
    w = torch.randn(d, dtype=dt, device=device, requires_grad=True)
    output = x @ w
    error = y - output
    error_squared = error ** 2
    loss = torch.mean(error_squared)
    if retain:
        for t in (output, error, error_squared, loss):
            t.retain_grad()
    loss.backward()
    return w.grad
