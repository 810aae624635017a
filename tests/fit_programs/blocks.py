"""A small residual network of blocks in a ModuleList, for gradmem fit --suggest's checkpointing test."""
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.up, self.down = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        return x + self.down(torch.relu(self.up(x)))


class Net(nn.Module):
    def __init__(self, d, depth):
        super().__init__()
        self.layers = nn.ModuleList(Block(d) for _ in range(depth))
        self.head = nn.Linear(d, 1)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


def main(batch: int = 512, d: int = 64, depth: int = 4):
    net = Net(d, depth)
    x = torch.randn(batch, d)
    loss = net(x).pow(2).mean()
    loss.backward()
