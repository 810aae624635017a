"""DDP on CPU with gloo: two ranks, unequal batches (rank r trains on (r + 1) * batch rows).

Run it with ``gradmem profile --nproc-per-node 2 scenarios/ddp.py`` (or under torchrun).
Rank 1 holds more activations than rank 0 at its peak; gradients, DDP's buckets and the
parameters are the same size on every rank."""
import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP


def main(batch: int = 64, width: int = 64, steps: int = 2, bucket_view: bool = False):
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(width, 4 * width), nn.ReLU(), nn.Linear(4 * width, 1))
    ddp = DDP(model, gradient_as_bucket_view=bucket_view)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.01)
    torch.manual_seed(1 + rank)
    x = torch.randn((rank + 1) * batch, width)
    y = torch.randn((rank + 1) * batch, 1)
    for _ in range(steps):
        opt.zero_grad()
        loss = ((ddp(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
    dist.destroy_process_group()
