"""DDP on CPU with gloo: two ranks, unequal batches (rank r trains on (r + 1) * batch rows).

Run it with ``gradmem profile --nproc-per-node 2 scenarios/distributed/ddp.py`` (or under torchrun).
Rank 1 holds more inputs, activations and activation gradients than rank 0 at its peak;
the parameters, their gradients and DDP's bucket (a ``comm_buffer``) are the same size on
every rank. ``-p bucket_view=true`` makes each ``.grad`` a view of the bucket."""
import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP


def main(batch: int = 64, width: int = 64, steps: int = 2, bucket_view: bool = False, device: str = "cpu"):
    if device == "cuda":   # one GPU per rank
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(width, 4 * width), nn.ReLU(), nn.Linear(4 * width, 1)).to(device)
    ddp = DDP(model, gradient_as_bucket_view=bucket_view)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.01)
    torch.manual_seed(1 + rank)
    x = torch.randn((rank + 1) * batch, width, device=device)
    y = torch.randn((rank + 1) * batch, 1, device=device)
    for _ in range(steps):
        opt.zero_grad()
        loss = ((ddp(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
    dist.destroy_process_group()
