"""The event log: sequence numbers, the clock, and which step is in progress.

Hooks only call ``emit`` and ``begin_step``; they never aggregate or format. Safe to call
from the autograd device threads: ``itertools.count`` and ``list.append`` are atomic, and
events are sorted by sequence number when the trace is built.

Each event is kept as a plain tuple ``(seq, t_ns, kind, step, keys, values)`` whose values
are atomic (callers pass tuples, not lists), and becomes an ``Event`` only when the
trace is built. The kind is stored as a plain str, never an ``EventKind``: an Enum member
is an object the collector tracks, so a tuple holding one is never untracked, and a few
thousand such tuples kept per step made every full collection walk them all (measured on
the native engine: 808 of the 1,485 tracked objects each step left behind). A dict per
event kept alive for the whole run costs the garbage collector several microseconds per
event on a big heap (measured: 7.9 us against 0.3 us).
"""
from __future__ import annotations

import itertools
import time
from typing import Callable

from .. import event_rows
from ..events import EventKind
from ..gc_pause import paused
from ..roles import Phase
from ..trace import Event
from .cursor import Cursor
from .guard import Guard

STEP = EventKind.STEP.value   # a plain str: an Enum lookup per step costs 0.2 us more


class Recorder:
    """Appends events; reads the step from the cursor it is given (the cursor's owner)."""

    # (enter(path), exit(path, what forward returned)) of a recorder that keeps module spans
    # itself (the native one), else None: modules.py then emits them as events
    spans = None
    engine = "python"   # the capture engine it records for (notes that differ by engine read it)

    def __init__(self, cursor: Cursor | None = None, clock: Callable[[], int] = time.perf_counter_ns):
        self.cursor = cursor if cursor is not None else Cursor()
        self.clock = clock
        self.events: list[tuple] = []
        self._keys: dict[tuple, tuple] = {}   # one shared keys tuple per call site
        self._seq = itertools.count()
        self.active = True
        # (step, phase, events so far) after each step begins, e.g. the CLI's progress line
        self.on_progress: Callable[[int, Phase, int], None] | None = None
        self.before_step: Callable[[], None] | None = None   # e.g. a CUDA allocator reading
        self.guard = Guard(self)             # every hook's bookkeeping reports its faults here

    def emit(self, kind: str, step: int | None = None, **data) -> None:
        if self.active:
            if type(kind) is not str:   # an EventKind: its plain str (see the module's docstring)
                kind = kind.value
            keys = tuple(data)
            self.events.append((next(self._seq), self.clock(), kind, self.cursor.step if step is None else step,
                                self._keys.setdefault(keys, keys), tuple(data.values())))

    def emit_at(self, kind: str, t_ns: int, step: int, **data) -> None:
        """An event from another clock (the allocator's), already converted to ours."""
        if self.active:
            if type(kind) is not str:
                kind = kind.value
            keys = tuple(data)
            self.events.append((next(self._seq), t_ns, kind, step, self._keys.setdefault(keys, keys),
                                tuple(data.values())))

    def of_kind(self, kind: str) -> list[Event]:
        """The events of one kind so far, as Events (for the few readers inside capture)."""
        return [_event(r) for r in self.events if r[2] == kind]

    def begin_step(self, phase: Phase, op: str, node: int | None = None) -> None:
        if self.before_step is not None:
            self.before_step()
        cursor = self.cursor
        step = cursor.advance(phase, node)
        self.emit(STEP, step, phase=phase.value, op=op, node=node,
                  backward=cursor.backward_index if phase is Phase.BACKWARD else None)
        if self.on_progress is not None:
            self.on_progress(step, phase, len(self.events))

    def events_and_shapes(self) -> tuple[tuple[Event, ...] | None, dict | None]:
        """The events grouped by kind and field names as columns (``Trace.shapes``), taken
        from the keys and values each event already has, in sequence order; the ``Event``
        objects themselves only where an event named a field twice (then no shapes: its
        dict keeps one of the two). A trace made from the columns builds its events when
        they are first read. The collector is paused meanwhile: only gradmem's own tuples
        are made here."""
        with paused():
            shapes = self._shapes()
            if any(len(set(keys)) < len(keys) for _kind, keys in shapes):
                return event_rows.events(shapes, Event), None
            return None, shapes

    def _shapes(self) -> dict:
        """{(kind, keys): columns (indexes, seq, t_ns, step, *values)} of the events in sequence order."""
        groups: dict = {}
        group = groups.setdefault
        for i, (seq, t, kind, step, keys, values) in enumerate(sorted(self.events)):
            group((kind, keys), []).append((i, seq, t, step, *values))
        return {shape: list(zip(*rows)) for shape, rows in groups.items()}


def _event(r: tuple) -> Event:
    seq, t_ns, kind, step, keys, values = r
    return Event(seq, t_ns, kind, step, dict(zip(keys, values)))
