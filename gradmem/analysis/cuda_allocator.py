"""What PyTorch's CUDA caching allocator would hold for a trace's CUDA storages: a model.

The trace gives exact storage bytes (``nbytes``). The allocator hands out more: it rounds
every request and reserves whole segments from ``cudaMalloc`` that it keeps cached. Its
rules (c10/cuda/CUDACachingAllocator.cpp, default settings, one stream):

- a request is rounded up to a multiple of 512 B (at least 512 B);
- rounded sizes up to 1 MiB come from the small pool, whose segments are 2 MiB; larger
  ones from the large pool, whose segments are 20 MiB for requests under 10 MiB and the
  request rounded up to 2 MiB otherwise;
- a request takes the smallest free cached block of its pool that fits (best fit), split
  when the rest is at least 512 B (small pool) or more than 1 MiB (large pool);
- a freed block merges with free neighbours and stays cached: reserved bytes never go
  down (no ``empty_cache``).

``allocated`` is what ``torch.cuda.memory_allocated()`` would read (sizes of blocks in
use), ``reserved`` what ``torch.cuda.memory_reserved()`` would read (segments). Not
modelled: kernel workspaces (cuBLAS, cuDNN), other streams, ``PYTORCH_CUDA_ALLOC_CONF``
options, expandable segments, and the order of blocks of equal size (real ties go by
address).
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from .tables import each_row

MiB = 1 << 20
MIN_BLOCK = 512            # kMinBlockSize
SMALL_SIZE = 1 * MiB       # kSmallSize: largest request served by the small pool
SMALL_SEGMENT = 2 * MiB    # kSmallBuffer
LARGE_SEGMENT = 20 * MiB   # kLargeBuffer: segment for requests under MIN_LARGE_ALLOC
MIN_LARGE_ALLOC = 10 * MiB
ROUND_LARGE = 2 * MiB


def round_size(nbytes: int) -> int:
    return max(MIN_BLOCK, -(-nbytes // MIN_BLOCK) * MIN_BLOCK)


def segment_size(size: int) -> int:
    if size <= SMALL_SIZE:
        return SMALL_SEGMENT
    if size < MIN_LARGE_ALLOC:
        return LARGE_SEGMENT
    return -(-size // ROUND_LARGE) * ROUND_LARGE


@dataclass
class Block:
    size: int
    small: bool
    free: bool = True


class CachingAllocator:
    """Segments as ordered lists of blocks; counts allocated and reserved bytes."""

    def __init__(self):
        self.segments: list[list[Block]] = []
        self.in_use: dict[int, Block] = {}
        self.allocated = 0
        self.reserved = 0

    def malloc(self, key: int, nbytes: int) -> None:
        if nbytes <= 0:        # a zero-byte storage gets no block
            return
        size = round_size(nbytes)
        small = size <= SMALL_SIZE
        segment, i = self._best_fit(size, small) or self._new_segment(size, small)
        block = segment[i]
        rest = block.size - size
        if rest >= MIN_BLOCK if small else rest > SMALL_SIZE:
            block.size = size
            segment.insert(i + 1, Block(rest, small))
        block.free = False
        self.in_use[key] = block
        self.allocated += block.size

    def free(self, key: int) -> None:
        block = self.in_use.pop(key, None)
        if block is None:
            return
        block.free = True
        self.allocated -= block.size
        segment = next(s for s in self.segments if any(b is block for b in s))
        _merge_free(segment)

    def _best_fit(self, size: int, small: bool):
        fits = [(b.size, si, i) for si, seg in enumerate(self.segments) for i, b in enumerate(seg)
                if b.free and b.small == small and b.size >= size]
        if not fits:
            return None
        _, si, i = min(fits)
        return self.segments[si], i

    def _new_segment(self, size: int, small: bool):
        total = segment_size(size)
        self.segments.append([Block(total, small)])
        self.reserved += total
        return self.segments[-1], 0


def _merge_free(segment: list[Block]) -> None:
    i = 0
    while i < len(segment) - 1:
        if segment[i].free and segment[i + 1].free:
            segment[i].size += segment.pop(i + 1).size
        else:
            i += 1


def _cuda_events(tensors: pd.DataFrame) -> list[tuple[int, int, int]]:
    """(seq, storage id, nbytes; -1 for a free) for every CUDA storage, in event order."""
    cuda = tensors[tensors["device"].astype(str).str.startswith("cuda")]
    events = [(int(s), int(i), int(n)) for s, i, n in each_row(cuda, "alloc_seq", "id", "nbytes")]
    freed = cuda[cuda["free_seq"].notna()]
    events += [(int(s), int(i), -1) for s, i in each_row(freed, "free_seq", "id")]
    return sorted(events)


def estimate(tensors: pd.DataFrame) -> dict | None:
    """Peaks of allocated and reserved bytes the allocator would reach; None without CUDA."""
    events = _cuda_events(tensors)
    if not events:
        return None
    alloc = CachingAllocator()
    peak_allocated = peak_reserved = 0
    for _, key, nbytes in events:
        if nbytes < 0:
            alloc.free(key)
        else:
            alloc.malloc(key, nbytes)
        peak_allocated = max(peak_allocated, alloc.allocated)
        peak_reserved = max(peak_reserved, alloc.reserved)
    return {"allocated_peak_bytes": peak_allocated, "reserved_peak_bytes": peak_reserved,
            "segments": len(alloc.segments)}
