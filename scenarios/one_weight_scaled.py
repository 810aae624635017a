"""Seed example 1 scaled up: one weight, n data points, mean squared error.

output = x * w with x of n values and a single weight w. With the defaults every tensor
of n float32 values is 80 MB, so memory is easy to see.

What to look for in the report:
- x is saved by MulBackward0 (an input: no new bytes); error is saved by PowBackward0
  and is the activation that costs memory (n values);
- output and error_squared are intermediates: saved by nothing, alive only because the
  script holds them;
- the peak is in backward, when the gradient of error_squared, its temporaries and the
  saved error are all alive at once;
- w.grad is one number, however large n is.
Try `-p retain=true` to see what retain_grad() costs: one extra n-value copy per tensor.
"""
import torch


def main(n: int = 20_000_000, dtype: str = "float32", device: str = "cpu", retain: bool = False, seed: int = 0):
    torch.manual_seed(seed)
    dt = getattr(torch, dtype)
    x = torch.randn(n, dtype=dt, device=device)
    y = torch.randn(n, dtype=dt, device=device)
    w = torch.tensor(5.0, dtype=dt, device=device, requires_grad=True)
    output = x * w
    error = y - output
    error_squared = error ** 2
    loss = torch.mean(error_squared)
    if retain:
        for t in (output, error, error_squared, loss):
            t.retain_grad()
    loss.backward()
    return w.grad
