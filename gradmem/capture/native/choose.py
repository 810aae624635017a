"""Which capture engine a run uses, and why: the one fact ``gradmem doctor`` and the trace's
``capture_engine`` report.

``native`` needs the extension (a C++ compiler the first time), real tensors (fake tensors
never reach an allocator, so the dispatch path records them) and no other profiler running
(torch keeps one profiler state per thread). ``python`` always works.
"""
from __future__ import annotations

from typing import NamedTuple

from . import loader
from ...gc_pause import Frozen

ENGINES = ("auto", "python", "native")
DEFAULT = "auto"


class Choice(NamedTuple):
    engine: str            # python | native
    native: object | None  # when native: the engine's parts for one capture (engine.NativeSession)
    reason: str            # why this engine, in one sentence
    asked: str = DEFAULT   # what the run asked for (python | native | auto)

    def recorder_and_storages(self, cursor_type, recorder_type, storages_type) -> tuple:
        """The capture's recorder (with its cursor) and storages: the native engine's own,
        or the given Python ones."""
        if self.native is not None:
            return self.native.rec, self.native.storages
        rec = recorder_type(cursor_type())
        return rec, storages_type(rec)

    def graph(self, graph_type, rec, cursor, storages):
        """The backward graph: the native engine's has no node hooks (its record has the nodes)."""
        if self.native is not None:
            return self.native.make_graph(rec, cursor, storages)
        return graph_type(rec, cursor, storages)

    def saved_watcher(self, watcher_type, rec, cursor, storages, graph):
        """The saved-tensor hooks: the native engine's C++ pair, or the given Python watcher."""
        if self.native is not None:
            return self.native.saved_watcher(rec, cursor, storages, graph)
        return watcher_type(rec, cursor, storages, graph)

    def op_watchers(self, watcher_type, *args, sources=None) -> list:
        """The dispatch-mode op watcher, unless the native recorder sees the ops (and, with
        ``sources`` given, reads the user's line behind each op itself)."""
        if self.native is None:
            return [watcher_type(*args, sources=sources)]
        self.native.sources = sources is not None
        return []

    def contexts(self) -> list:
        """Entered around the watchers: the collector's frozen view of the heap as it was,
        and the native recorder, when it runs."""
        return [Frozen()] + ([self.native] if self.native is not None else [])



def fake_mode_active() -> bool:
    """Is the program's own FakeTensorMode on (a capture started inside it)?"""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils._python_dispatch import _get_current_dispatch_mode_stack
    return any(isinstance(m, FakeTensorMode) for m in _get_current_dispatch_mode_stack())


def profiler_running() -> bool:
    import torch
    return bool(torch._C._autograd._profiler_enabled())


def choose(requested: str = DEFAULT, fake: bool = False, progress=None, rank: bool = False,
           verify: bool = True) -> Choice:
    """The engine for one run. ``requested="native"`` that cannot be had falls back to the
    Python engine with the reason (gradmem never fails a run for its own engine). ``auto``
    picks the Python engine for a rank of a torchrun job (``rank``): only it records the
    collectives' buffers (DDP's buckets, FSDP2's all-gathers). ``verify=False``: the trace
    leaves out the allocator's own record (the extension sees it anyway)."""
    if requested not in ENGINES:
        raise ValueError(f"unknown capture engine {requested!r}: choose one of {', '.join(ENGINES)}")
    if requested == "python":
        return Choice("python", None, "the Python engine was asked for", requested)
    if fake or fake_mode_active():
        return Choice("python", None, "fake tensors never reach an allocator: the Python dispatch engine records them",
                      requested)
    if rank and requested == "auto":
        return Choice("python", None, "a rank of a distributed job: only the Python engine records the collectives' "
                      "buffers (DDP buckets, FSDP2 all-gathers)", requested)
    if profiler_running():
        return Choice("python", None, "another torch profiler is running, and torch allows one at a time", requested)
    ext = loader.load(progress)
    if ext is None:
        return Choice("python", None, loader.why_not() or "the native engine could not be loaded", requested)
    if ext.running():
        return Choice("python", None, "another gradmem capture is using the native engine", requested)
    from .engine import NativeSession
    reason = "the native extension is built" + (" (asked for)" if requested == "native" else "")
    return Choice("native", NativeSession(ext, verify), reason, requested)
