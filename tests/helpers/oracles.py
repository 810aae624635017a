"""Independent oracles: the allocator's own record, and plain numel * element_size sums.
Nothing here uses gradmem."""
from __future__ import annotations

import torch
from torch._C._profiler import _EventType


def allocator_record(fn):
    """Run fn under torch.profiler(profile_memory=True); return (result, allocations) where
    allocations are (t_ns, ptr, delta_bytes, total_allocated) in time order."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    out, stack = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.typed[0] == _EventType.Allocation:
            f = node.typed[1]
            out.append((node.start_time_ns, f.ptr, f.alloc_size, f.total_allocated))
    out.sort()
    return result, out


def allocator_peak(allocations) -> int:
    """Highest total allocated during the window, above what was allocated before it."""
    if not allocations:
        return 0
    base = allocations[0][3] - allocations[0][2]
    return max(a[3] for a in allocations) - base


class SavedStorages:
    """A minimal pack hook that notes which storages autograd saved (weakly)."""

    def __init__(self):
        self.storages = {}

    def pack(self, t):
        s = t.untyped_storage()
        self.storages[s.data_ptr()] = s.nbytes()
        return t

    def hooks(self):
        return torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)
