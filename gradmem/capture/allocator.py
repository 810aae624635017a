"""The CPU allocator's own record of every allocation and free, next to the hooks' record.

torch's profiler with ``profile_memory=True`` is told of every allocation and free of the
CPU allocator: address, bytes, running total, time. We enable it with only the
``USER_SCOPE`` record-function callbacks, so it does not also record every op: that keeps
its cost to a few percent, where ``torch.profiler.profile`` costs far more on small ops
(both measured side by side in ``benchmarks/overhead.py``). The record is read once, when
the capture ends, and written into the trace as ``allocator`` events, so the analysis can
be redone from the trace file without torch.

Two clocks. The hooks stamp events with ``time.perf_counter_ns`` (monotonic); the profiler
stamps allocations with its own clock (a cycle counter converted to Unix-epoch ns). To put
the allocator's events on the hooks' clock we make a few marker allocations with our modes
off, reading ``perf_counter_ns`` just before and just after each. The marker's allocation,
found in the record by its address and size, happened inside that window, so
``offset = P - perf`` lies in ``[P - after, P - before]``; the intersection of several
markers' windows pins it to a microsecond or two (``clock`` event: ``error_ns``). Markers
are made at the start and at the end, and the offset is interpolated between the two, so
a steady drift of one clock against the other (NTP slewing the wall clock) is fitted too.
Addresses are used only for this matching, and to match blocks with storages in the
analysis: never as ids.

Known limitations: only one profiler can run at a time, so inside another
``torch.profiler`` session the capture records no allocator events (and says so in a note);
frees of blocks allocated before the capture are not reported by the allocator.
"""
from __future__ import annotations

import bisect
import contextlib
import os
import statistics
import sys
import time

import torch
from torch._C._profiler import (
    ProfilerActivity, ProfilerConfig, ProfilerState, RecordScope, _EventType, _ExperimentalConfig,
)
from torch.autograd import _disable_profiler, _enable_profiler, _prepare_profiler

from ..events import EventKind
from .native import loader as native_loader

MARKER_BYTES = 3079        # odd sizes, easy to pick out of a raw record
MARKERS = 3                # per end; sizes MARKER_BYTES + i at the start, + 8 + i at the end


def profiler_running() -> bool:
    """torch.profiler, or a native gradmem capture (an outer one, say), is recording."""
    return bool(torch._C._autograd._profiler_enabled()) or native_loader.recording()


class CpuAllocatorRecord:
    """Start, stop, and turn the allocator's record into ``allocator`` and ``clock`` events."""

    def __init__(self, rec, clock=time.perf_counter_ns):
        self.rec = rec
        self.notes: list[str] = []
        self.clock = clock
        self.running = False
        self._marks: list[tuple] = []      # (ptr, nbytes, before_ns, after_ns, at_end)

    def start(self) -> bool:
        """Begin recording; False when another profiler is already running."""
        if profiler_running():
            return False
        config = ProfilerConfig(ProfilerState.KINETO, False, True, False, False, False, _ExperimentalConfig())
        activities = {ProfilerActivity.CPU}
        with _quiet_stderr():   # kineto prints "USDT: profiler_start" on every start
            _prepare_profiler(config, activities)
            _enable_profiler(config, activities, {RecordScope.USER_SCOPE})
        self.running = True
        self._mark(at_end=False)
        return True

    def stop(self) -> None:
        """End recording and emit the record; call while the recorder is still active."""
        if not self.running:
            return
        self._mark(at_end=True)
        with _quiet_stderr():
            result = _disable_profiler()
        self.running = False
        events = allocations(result)
        markers, clock = self._align(events)
        self.rec.emit(EventKind.CLOCK, **clock)
        if clock["method"] == "none":   # times that cannot be placed among the steps
            self.notes.append("the allocator's record could not be aligned with the hooks (no marker "
                              "allocations: a fake or meta tensor mode?), so it was left out")
            return
        self._emit(events, markers, clock)

    def _mark(self, at_end: bool) -> None:
        for i in range(MARKERS):
            size = MARKER_BYTES + (8 if at_end else 0) + i
            try:
                before = self.clock()
                block = torch.empty(size, dtype=torch.uint8, device="cpu")
                after = self.clock()
                if type(block) is not torch.Tensor:      # a fake or other subclass mode is on
                    return
                self._marks.append((block.untyped_storage().data_ptr(), size, before, after, at_end))
                del block
            except (RuntimeError, NotImplementedError):   # under a fake or meta mode: no data
                return

    def _align(self, events: list[tuple]) -> tuple[set, dict]:
        """The marker events found in the record, and the clock fit."""
        found, windows = set(), {False: [], True: []}
        keys = {(m[0], m[1]): [] for m in self._marks}
        for i, e in enumerate(events):
            hits = keys.get((e[1], e[2]))
            if hits is not None:
                hits.append(i)
        for ptr, size, before, after, at_end in self._marks:
            hits = keys[(ptr, size)]
            if not hits:
                continue
            i = hits[-1] if at_end else hits[0]
            found.add(i)
            found.update(_free_of(events, i))
            windows[at_end].append((events[i][0] - after, events[i][0] - before, events[i][0]))
        start, end = _fit(windows[False]), _fit(windows[True])
        if start is None:
            start = end
        if end is None:
            end = start
        if start is None:
            return found, {"method": "none", "offset_ns": 0, "error_ns": None, "markers": 0}
        return found, {"method": "markers", "markers": len(windows[False]) + len(windows[True]),
                       "offset_ns": start[0], "error_ns": max(start[1], end[1]),
                       "at_ns": start[2], "end_offset_ns": end[0], "end_at_ns": end[2]}

    def _emit(self, events: list[tuple], markers: set, clock: dict) -> None:
        step_t, step_n = self._step_times()
        to_perf = _converter(clock)
        emit = self.rec.emit_at
        for i, (t, ptr, nbytes, total) in enumerate(events):
            if i in markers:
                continue
            t_hooks = to_perf(t)
            k = bisect.bisect_right(step_t, t_hooks) - 1
            emit(EventKind.ALLOCATOR, t_hooks, step_n[k] if k >= 0 else 0, ptr=ptr, nbytes=nbytes, total=total)

    def _step_times(self) -> tuple[list, list]:
        steps = [(e.t_ns, e.step) for e in self.rec.of_kind(EventKind.STEP)]
        steps.sort()
        return [t for t, _ in steps], [n for _, n in steps]


@contextlib.contextmanager
def _quiet_stderr():
    """Silence file descriptor 2 for the instant kineto starts or stops: its C++ logging
    ignores every log-level setting. Python's own sys.stderr is flushed first."""
    try:
        sys.stderr.flush()
        saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    except (OSError, ValueError):   # no real stderr (some notebooks): nothing to silence
        yield
        return
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def allocations(result) -> list[tuple]:
    """(profiler t_ns, ptr, bytes (+alloc / -free), total allocated), in time order."""
    out, stack = [], list(result.experimental_event_tree())
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.typed[0] == _EventType.Allocation:
            f = node.typed[1]
            if f.device.type == "cpu":
                out.append((node.start_time_ns, f.ptr, f.alloc_size, f.total_allocated))
    out.sort(key=lambda e: e[0])
    return out


def _free_of(events: list[tuple], i: int) -> list[int]:
    t, ptr, size, _ = events[i]
    for j in range(i + 1, len(events)):
        if events[j][1] == ptr:
            return [j] if events[j][2] == -size else []
    return []


def _fit(windows: list[tuple]) -> tuple[int, int, int] | None:
    """(offset, error, profiler time) from marker windows [lo, hi] on the offset."""
    if not windows:
        return None
    lo, hi = max(w[0] for w in windows), min(w[1] for w in windows)
    at = windows[0][2]
    if lo <= hi:
        return (lo + hi) // 2, (hi - lo) // 2, at
    mids = [(w[0] + w[1]) // 2 for w in windows]   # windows disagree: the clocks jumped
    return int(statistics.median(mids)), max(mids) - min(mids), at


def _converter(clock: dict):
    """Profiler ns -> hooks' ns, the offset interpolated between the start and end fits."""
    off0, off1 = clock.get("offset_ns", 0), clock.get("end_offset_ns", clock.get("offset_ns", 0))
    at0, at1 = clock.get("at_ns", 0), clock.get("end_at_ns", 0)
    if at1 <= at0:
        return lambda t: t - off0
    slope = (off1 - off0) / (at1 - at0)
    return lambda t: t - off0 - int(slope * (t - at0))
