"""The native engine's seam with the capture: its recorder, its storage registry, and the
events it hands to the trace when the trace is built (the record stays in C++ until then).

In C++ (recorder.cpp): every op frame and every allocation and free, each allocation
attributed to its op and step as it happens; a step only becomes an event if something
refers to it. In Python: the saved-tensor hooks, the function watcher (backward calls,
retain_grad, which tensors require grad), one graph walk per backward and the leaf hooks,
exactly as on the Python engine. They ask the native side which step is running and which
storage id a tensor's storage has; nothing runs in Python per op.

Storages the allocator never reported during the capture (made before it, shared with
numpy or ``from_blob``, zero bytes) are tracked by the Python weakrefs of ``Storages``,
with ids from the same counter.
"""
from __future__ import annotations

import time
from functools import partial

import torch

from ...gc_pause import paused
from ...roles import Phase
from ..cursor import Cursor
from ..graph import Graph
from ..names import SKIP_DIRS
from ..recorder import Recorder
from ..resident import EVERY_S
from ..saved import CHECKPOINT_FILE, Packed, SavedTensorWatcher
from ..values import exact_now
from ..storages import Storages
from .merge import merge


class NativeSession:
    """The native engine's parts for one capture: cursor, recorder and storages that ask
    the extension, its start and stop, and the merge of its record into the events."""

    def __init__(self, ext, allocator_record: bool = True):
        self.ext = ext
        self.allocator_record = allocator_record   # the allocator's own record in the trace (--no-verify: not)
        self.graph: Graph | None = None
        self.cursor = NativeCursor(ext)
        self.rec = NativeRecorder(self.cursor)
        self.storages = NativeStorages(self.rec, ext, self)
        see = self.storages.see_guarded
        self.rec.module_spans = (ext.module_enter, partial(ext.module_exit, see))   # modules.py: (path), (path, output)
        self.leaf_names: dict = {}   # (leaf event, 0 arriving | 1 landed) -> storage id, named in Python
        # the recorder samples resident memory itself where /proc can be read, on a thread
        # that never takes the GIL: the Python sampler's thread then stays off
        self.samples_rss = ext.resident_bytes() >= 0
        self.sources = False   # read the user's line behind each op (the capture's attribution)
        self._raw = None

    def make_graph(self, rec, cursor, storages) -> Graph:
        self.graph = NativeGraph(rec, cursor, storages, self.ext)
        return self.graph

    def saved_watcher(self, rec, cursor, storages, graph) -> "NativeSavedWatcher":
        return NativeSavedWatcher(rec, cursor, storages, graph, self.ext)

    def __enter__(self) -> "NativeSession":
        # tensor facts of each top-level op's inputs too (want_inputs); RSS as resident.py samples it
        self.ext.start(1, True, round(EVERY_S * 1000) if self.samples_rss else 0,
                       list(SKIP_DIRS) if self.sources else [], self.storages.see_guarded)
        return self

    def __exit__(self, *exc) -> bool:
        self.stop()
        return False

    def stop(self) -> None:
        """Stop recording; the record stays in C++ (``ext.Record``) until the merge, so
        leaving the capture's block makes no Python object per event."""
        if self._raw is None and self.ext.running():
            self._raw = self.ext.stop()

    def merge(self) -> None:
        """Call after the recorder stopped: no Python event may come after the merge."""
        self.stop()
        if self._raw is not None:
            with paused():   # only gradmem's own tuples are made here: no cycles to collect
                self.rec.shapes = merge(self.rec, self._raw.take(), self.leaf_names, self.allocator_record)
            self._raw = None


class NativeCursor(Cursor):
    """The step is the native recorder's (reading it marks it, so that it is exported);
    backward calls are told to it, so its steps know their phase. ``fresh_call`` stays
    False: the native side knows the op a saved input belongs to."""

    def __init__(self, ext):
        super().__init__()
        self.ext = ext

    @property
    def step(self) -> int:
        return self.ext.current_step()   # -1 once it stopped

    @step.setter
    def step(self, value) -> None:   # Cursor.__init__ sets it; the native side owns it
        pass

    @property
    def fresh_call(self) -> bool:
        return False

    @fresh_call.setter
    def fresh_call(self, value) -> None:
        pass

    def enter_backward(self, create_graph: bool) -> bool:
        outer = super().enter_backward(create_graph)
        self.ext.set_backward(self.backward_index, self.create_graph)
        return outer

    def leave_backward(self, outer_create_graph: bool) -> None:
        super().leave_backward(outer_create_graph)
        self.ext.set_backward(self.backward_index if self.in_backward else 0, self.create_graph)


class NativeRecorder(Recorder):
    """Steps Python begins (``(after backward)``) are begun in the native recorder, which
    exports them with the others; an event's step is the extension's (``NativeCursor``).

    No step begins in Python, so progress (``on_progress``) is told from the seams Python
    keeps: each backward call's start and end, and module calls, at most every 0.2 s."""

    module_spans = None
    engine = "native"
    TICK_S = 0.2
    _tick_at = 0.0   # monotonic time of the next progress report a module call may give

    shapes = None   # the trace's columns, once the merge made them (merge.py)

    def begin_step(self, phase, op: str, node: int | None = None) -> None:
        self.cursor.ext.begin_step(op, self.cursor.backward_index if phase == "backward" else 0)

    def _shapes(self) -> dict:
        """The merge's columns (``events`` keeps Python's own, which they include); before a
        merge, Python's events alone."""
        return super()._shapes() if self.shapes is None else self.shapes

    @property
    def module_call(self):
        """modules.py's wrapper of ``Module._call_impl``, in C (recorder.cpp)."""
        return self.cursor.ext.module_call

    @property
    def spans(self):
        """The module spans the watcher calls (read once, when it is built)."""
        if self.on_progress is None:
            return self.module_spans
        enter, exit_ = self.module_spans
        tick = self.progress

        def enter_and_tick(path):
            enter(path)
            tick()
        return enter_and_tick, exit_

    def progress(self, phase=None, now: bool = False) -> None:
        """Tell ``on_progress`` how far the run is, if ``TICK_S`` passed since (or ``now``)."""
        t = time.monotonic()
        if self.on_progress is None or (t < self._tick_at and not now):
            return
        self._tick_at = t + self.TICK_S
        steps, events = self.cursor.ext.progress()
        if phase is None:
            phase = Phase.BACKWARD if self.cursor.in_backward else Phase.FORWARD
        self.on_progress(steps, phase, events + len(self.events))


class NativeGraph(Graph):
    """The walk is the extension's (recorder.cpp, "the backward graph"): it keeps the node
    ids and records each new node and each slot holding our pack, exported when the
    capture ends (``merge`` makes the events the Python walk emits). Python reads only the
    slots that are not ours. No node hooks: node steps and ends come from the recorder."""

    def __init__(self, rec, cursor, storages, ext):
        super().__init__(rec, cursor, storages)
        self.ext = ext
        self.packed_types = (Packed, ext.Packed)

    def hook_nodes(self, roots) -> list:
        return []

    def discover_from(self, tensors) -> None:
        for nid, field, slot in self.ext.discover(list(tensors), self.storages.see_guarded, self._describe):
            self._record_slot(nid, field, slot)   # not our pack: checkpoint's, save_on_cpu's, a wrapped number

    def discover(self, roots) -> None:
        """Node objects cannot be handed to the extension's walk: a node it has not walked
        yet is found from a tensor (``node_of``), never from the node alone."""

    def node_id(self, node) -> int | None:
        return self.ext.node_id(*self.key(node))

    def node_of(self, t, grad_fn) -> int | None:
        key = self.key(grad_fn)
        nid = self.ext.node_id(*key)
        if nid is None:
            self.discover_from([t])
            nid = self.ext.node_id(*key)
        return nid

    def leaves_of(self, tensors, call: str = "backward") -> list:
        """For a ``backward`` call the walk also watches each leaf's gradient (no Python per
        leaf: ``NativeGradWatcher``) and returns only the leaves whose facts are not recorded
        yet; for ``autograd.grad`` every leaf, for the Python hooks."""
        return self.ext.leaves(list(tensors), self.storages.see_guarded, call == "backward")

    def _describe(self, node) -> tuple:
        return self._slot_fields(node), self._attr_fields(node)


class NativeSavedWatcher(SavedTensorWatcher):
    """The pack and unpack hooks are the extension's own (recorder.cpp, "saved-tensor
    hooks"): they record what the Python pair records, with no Python run per saved tensor
    in the usual case. Python is called back for what it owns (the id of a storage made
    before the capture, a small tensor's exact digits), and this watcher's own pair takes
    over for a tensor the C++ pair cannot describe. Hooks installed before the capture
    (``save_on_cpu`` around it) keep the whole Python pair, which wraps them."""

    def __init__(self, rec, cursor, storages, graph, ext):
        super().__init__(rec, cursor, storages, graph)
        self.ext = ext
        self._next = _Counter(ext.new_pid)   # one pack id counter for both pairs

    def __enter__(self):
        if self._outer:
            return super().__enter__()
        self.ext.hook_saved(self.storages.see_guarded, partial(self.rec.guard.call, exact_now), self.pack,
                            self.unpack, CHECKPOINT_FILE, self.ext.pack_saved, self.ext.unpack_saved)
        self._cm = torch.autograd.graph.saved_tensors_hooks(self.ext.pack_saved, self.ext.unpack_saved)
        self._cm.__enter__()
        return self


class NativeStorages(Storages):
    """Storage ids: the native recorder's for allocations it saw, weakrefs for the rest."""

    def __init__(self, rec: NativeRecorder, ext, session: NativeSession):
        super().__init__(rec)
        self.ext = ext
        self.session = session
        self._next = _Counter(ext.new_id)
        # ``see`` for the extension to call back: a failure is gradmem's, recorded, never raised
        self.see_guarded = partial(rec.guard.call, self.see)

    def close(self) -> None:
        """Stop watching and stop the native recorder; its record joins the events when the
        trace is built (``settle``)."""
        super().close()
        self.session.stop()

    def settle(self) -> None:
        self.session.merge()

    def lookup(self, t):
        """A storage the capture knows or the extension saw allocated; one made before the
        capture that nothing recorded stays unknown, as on the Python engine (naming a
        variable must not add its storage to the trace)."""
        sid = self._native_id(t)
        return sid if sid is not None else super().lookup(t)

    def see(self, t, op: str = "", preexisting: bool = True, factory: bool = False,
            recompute: bool = False, grad_args: bool = False):
        sid = self._native_id(t)
        return sid if sid is not None else super().see(t, op, preexisting, factory, recompute, grad_args)

    def _native_id(self, t):
        try:
            s = t.untyped_storage()
        except (RuntimeError, NotImplementedError):
            return None
        sid = self._ids.get(id(s))
        if sid is not None:
            return sid
        try:
            ptr = s.data_ptr()
        except RuntimeError:   # a storage FSDP2 freed (resized to nothing): no memory of its own
            return None
        if ptr:
            sid = self.ext.known(ptr)   # one call, no facts built, for the usual claimed storage
            if sid > 0:
                return sid
            if sid < 0:
                sid = self.ext.claim(ptr, str(t.dtype).replace("torch.", ""), list(t.shape), t.requires_grad)
                if sid:
                    return sid
        return None


class _Counter:
    """``next()`` on it draws from one of the native recorder's counters (storage ids, shared
    with allocations; pack ids, shared with the C++ pack hook)."""

    def __init__(self, draw):
        self.draw = draw

    def __next__(self) -> int:
        return self.draw()
