"""Ground truth beside the hooks: the allocator's record and the process's resident memory.

On CPU, the CPU allocator's record (``allocator.py``) when ``verify`` is on; on CUDA, the
caching allocator's readings after every step (``device.py``); on both, RSS samples
(``resident.py``). Started before the capture's modes and stopped after them, so their own
work is outside the hooks' record.
"""
from __future__ import annotations

from .allocator import CpuAllocatorRecord
from .device import CudaMemory
from .resident import ResidentSampler


class GroundTruth:
    def __init__(self, rec, device: str = "cpu", verify: bool = True, resident: bool = True):
        self.rec = rec
        self.cuda = CudaMemory(rec, device) if device.startswith("cuda") else None
        self.allocator = CpuAllocatorRecord(rec) if verify and self.cuda is None else None
        self.resident = ResidentSampler(rec) if resident else None
        self.notes: list[str] = []

    def start(self) -> None:
        if self.cuda is not None and not self.cuda.start():
            self.notes.append("CUDA is not available: no allocator readings")
        if self.allocator is not None and not self.allocator.start():
            self.notes.append("another torch profiler was running: the allocator's record was not taken "
                              "(live_unattributed and allocator_bytes are empty)")
            self.allocator = None
        if self.resident is not None and not self.resident.start():
            self.resident = None

    def stop(self) -> None:
        """Stop everything; the recorder must still be active, as this emits events."""
        for part in (self.resident, self.allocator, self.cuda):
            if part is not None:
                part.stop()
        if self.allocator is not None:
            self.notes += self.allocator.notes
