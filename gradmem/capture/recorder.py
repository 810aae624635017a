"""The event log: sequence numbers, the clock, and which step is in progress.

Hooks only call ``emit`` and ``begin_step``; they never aggregate or format. Safe to call
from the autograd device threads: ``itertools.count`` and ``list.append`` are atomic, and
events are sorted by sequence number when the trace is built.
"""
from __future__ import annotations

import itertools
import threading
import time
from typing import Callable

from ..trace import Event, EventKind


class Recorder:
    def __init__(self, clock: Callable[[], int] = time.perf_counter_ns):
        self.clock = clock
        self.events: list[Event] = []
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self.active = True
        self.step = 0
        self.node: int | None = None        # backward node whose step is in progress
        self.in_backward = 0                 # depth of backward calls in progress
        self.backward_index = 0
        self.on_progress: Callable[["Recorder"], None] | None = None
        self.before_step: Callable[[], None] | None = None   # e.g. a CUDA allocator reading

    def emit(self, kind: EventKind, step: int | None = None, **data) -> None:
        if self.active:
            seq = next(self._seq)
            self.events.append(Event(seq, self.clock(), kind, self.step if step is None else step, data))

    def emit_at(self, kind: EventKind, t_ns: int, step: int, **data) -> None:
        """An event from another clock (the allocator's), already converted to ours."""
        if self.active:
            self.events.append(Event(next(self._seq), t_ns, kind, step, data))

    def begin_step(self, phase: str, op: str, node: int | None = None) -> None:
        if self.before_step is not None:
            self.before_step()
        with self._lock:
            self.step += 1
            self.node = node
        self.emit(EventKind.STEP, phase=phase, op=op, node=node, backward=self.backward_index if phase == "backward" else None)
        if self.on_progress is not None:
            self.on_progress(self)

    def sorted_events(self) -> tuple[Event, ...]:
        return tuple(sorted(self.events, key=lambda e: e.seq))
