"""A small convolutional network: Conv2d -> BatchNorm2d -> ReLU, twice, then a Linear.

What to look for in the report:
- `unattributed` bytes: buffers the convolution and batch-norm kernels allocate and free
  inside one op (never an op's output, so no hook sees them). The allocator's record shows
  them: summary.json `allocator.unattributed_blocks` names each block's op and step, and
  steps.csv `allocator_peak_bytes` rises above `peak_bytes` in those steps;
- after every step, `live_bytes + live_unattributed == allocator_bytes`;
- BatchNorm saves its input and its batch statistics (NativeBatchNormBackward0), the
  convolution its input and weight (ConvolutionBackward0).
"""
import torch
from torch import nn


def main(batch: int = 32, channels: int = 16, size: int = 32, device: str = "cpu", seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(   # built on its device: --fake cannot .to() fake parameters
        nn.Conv2d(3, channels, 3, padding=1, device=device), nn.BatchNorm2d(channels, device=device), nn.ReLU(),
        nn.Conv2d(channels, channels, 3, padding=1, device=device), nn.BatchNorm2d(channels, device=device), nn.ReLU(),
        nn.Flatten(), nn.Linear(channels * size * size, 1, device=device),
    )
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randn(batch, 1, device=device)
    loss = nn.functional.mse_loss(model(x), y)
    loss.backward()
    return loss
