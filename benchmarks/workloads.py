"""The benchmarks' workloads: setup outside the timing, one training step inside.

Only torch is imported here, so the whole-process rows of overhead.py can run the same
workloads in a child whose plain baseline imports nothing of gradmem.
"""
from __future__ import annotations

import torch
from torch import nn


def two_rows_scaled(n: int, d: int):
    """The learner's two-rows example with n rows and d features."""
    torch.manual_seed(0)
    x, y = torch.randn(n, d), torch.randn(n)
    w = torch.randn(d, requires_grad=True)

    def step():
        w.grad = None
        error = y - x @ w
        (error ** 2).mean().backward()
    return step


def deep_mlp(depth: int, width: int, batch: int):
    torch.manual_seed(0)
    model = nn.Sequential(*[m for _ in range(depth) for m in (nn.Linear(width, width), nn.ReLU())])
    x = torch.randn(batch, width)

    def step():
        model.zero_grad(set_to_none=True)
        model(x).sum().backward()
    return step
