"""FSDP2 (``fully_shard``) on CPU with gloo: a small MLP whose parameters are sharded
across the ranks, all-gathered for each layer's forward and backward, and whose gradients
are reduce-scattered back to shards.

Run it with ``gradmem profile --nproc-per-node 2 scenarios/distributed/fsdp2.py``."""
import os

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import fully_shard


def main(batch: int = 32, width: int = 64, steps: int = 2, device: str = "cpu"):
    if device == "cuda":   # one GPU per rank
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(width, 4 * width), nn.ReLU(), nn.Linear(4 * width, width), nn.ReLU(),
                          nn.Linear(width, 1)).to(device)
    for layer in (model[0], model[2]):
        fully_shard(layer)
    fully_shard(model)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    torch.manual_seed(1 + dist.get_rank())
    x, y = torch.randn(batch, width, device=device), torch.randn(batch, 1, device=device)
    for _ in range(steps):
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
    dist.destroy_process_group()
