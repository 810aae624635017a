"""CUDA: the caching allocator's readings after every step, and its own history.

``torch.cuda.memory_allocated()`` (bytes in live blocks) and ``memory_reserved()`` (the
pool the caching allocator holds from the driver) are read as each step begins, which is
the state after the step before; a last reading closes the final step. The gap between
the two is memory the pool keeps for reuse. Where available,
``torch.cuda.memory._record_memory_history()`` records every block's allocation and free;
its entries go into the trace as ``allocator`` events (addresses and sizes, in the
allocator's order: they carry no step, as their clock is not aligned with the hooks').

Backward runs on an autograd device thread on CUDA: the readings are taken from
whichever thread begins a step, and ``Recorder.emit`` is safe from any thread.
"""
from __future__ import annotations

import torch

from ..events import EventKind

HISTORY_ENTRIES = 1_000_000


class CudaMemory:
    def __init__(self, rec, device: str):
        self.rec = rec
        self.device = torch.device(device)
        self.history = False

    def start(self) -> bool:
        if not torch.cuda.is_available():
            return False
        self.history = _start_history()
        self.read()
        self.rec.before_step = self.read
        return True

    def read(self) -> None:
        self.rec.emit(EventKind.DEVICE_MEMORY, device=str(self.device),
                      allocated=torch.cuda.memory_allocated(self.device),
                      reserved=torch.cuda.memory_reserved(self.device))

    def stop(self) -> None:
        if self.rec.before_step != self.read:
            return
        self.rec.before_step = None
        self.read()
        if self.history:
            self._emit_history()

    def _emit_history(self) -> None:
        try:
            snapshot = torch.cuda.memory._snapshot()
        finally:
            torch.cuda.memory._record_memory_history(enabled=None)
        index = self.device.index if self.device.index is not None else torch.cuda.current_device()
        traces = snapshot.get("device_traces", [])
        total = 0
        for entry in traces[index] if index < len(traces) else []:
            sign = {"alloc": 1, "free_completed": -1}.get(entry.get("action"))
            if sign is None:
                continue
            total += sign * entry["size"]
            self.rec.emit_at(EventKind.ALLOCATOR, 0, -1, ptr=entry.get("addr"), nbytes=sign * entry["size"],
                          total=total, device=str(self.device))


def _start_history() -> bool:
    record = getattr(torch.cuda.memory, "_record_memory_history", None)
    if record is None:
        return False
    try:
        record(enabled="all", context=None, max_entries=HISTORY_ENTRIES)
    except (TypeError, RuntimeError):
        return False
    return True
