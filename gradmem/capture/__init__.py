"""Capture: run code under hooks that record when each tensor's memory comes and goes.

``Capture`` enters the modes, and when the block ends ``finish()`` returns the ``Trace``:
nothing here analyses or formats it (``gradmem.session`` does that for
``gradmem.capture()``). The pieces, each handed only what it needs, and what each is
handed, are listed in docs/architecture.md.

Known limitations:
    - Buffers that kernels allocate internally (convolution workspaces) are not seen by
      the hooks; compare with the allocator for those.
    - Tensors saved under someone else's saved-tensor hooks entered *inside* the capture
      (``torch.utils.checkpoint``, ``save_on_cpu``) are reported as hidden slots.
    - ``torch.compile`` collapses the graph into one node with no saved fields.
    - ``verify=True`` (the default) records the CPU allocator's own allocations beside the
      hooks (``truth.py``); it cannot run inside another ``torch.profiler`` session, and
      then the summary says so. Resident memory is sampled every 10 ms on a thread.
"""
from __future__ import annotations

import sys
from typing import Iterable, Mapping

from ..trace import Trace
from .cursor import Cursor
from .fake import fake_modes
from .graph import Graph
from .truth import GroundTruth
from .meta import Settings, build_meta, now, record_error
from .native.calls import function_watcher
from .native.choose import choose as choose_engine
from .modules import ModuleWatcher, SourceWatcher
from .names import Namer
from .ops import OpWatcher
from .ranks import Collectives, StorageResizes, rank_env, rank_meta
from .recorder import Recorder
from .saved import SavedTensorWatcher
from .storages import Storages


class Capture:
    """Context manager that records one run. Leaving the block stops recording; ``finish()``
    or reading ``trace`` builds the ``Trace`` once, so the program never waits for that."""

    def __init__(self, scenario: str = "", params: dict | None = None, retain_grad: str = "as-written",
                 fake: bool = False, verify: bool = True, on_progress=None, engine="auto", build_progress=None,
                 attribution: bool = True):
        choice = choose_engine(engine, fake, build_progress, rank_env() is not None, verify)   # python, or native
        self.settings = Settings(scenario, dict(params or {}), retain_grad, fake, verify, attribution,
                                 ranks=rank_env(), engine=choice)
        self.rec, self.storages = choice.recorder_and_storages(Cursor, Recorder, Storages)   # rec.cursor
        self.rec.on_progress = on_progress   # (step, phase, events so far) after each step
        self.namer = Namer(self.rec, self.storages)
        self._watchers = self._build_watchers()
        self._modes: list = []
        self._started, self._error, self._stopped = "", None, False
        self._trace: Trace | None = None
        # fake tensors allocate nothing: there is no allocator record to compare with
        self.ground = GroundTruth(self.rec, "cpu" if fake else self.settings.device, verify and not (fake or choice.native),
                                  resident=not (choice.native and choice.native.samples_rss))   # native: in C++

    def _build_watchers(self) -> list:
        rec, cursor, storages, s = self.rec, self.rec.cursor, self.storages, self.settings
        graph = s.engine.graph(Graph, rec, cursor, storages)
        calls = function_watcher(s, rec, cursor, storages, graph, self.namer)   # CallWatcher or NativeCalls
        # module and source line behind each op (attribution=False: the benchmark's baseline)
        modules = [ModuleWatcher(rec, storages, lambda: self.namer.entry)] if s.attribution else []
        sources = SourceWatcher(rec) if s.attribution else None
        saved = s.engine.saved_watcher(SavedTensorWatcher, rec, cursor, storages, graph)
        ops = s.engine.op_watchers(OpWatcher, rec, cursor, storages, graph, s.fake, Collectives(rec, storages, s.ranks),
                                    sources=sources)
        return modules + [StorageResizes(storages), saved, calls, *ops]

    @property
    def trace(self) -> Trace | None:
        """The trace, once the block has ended (None while it runs)."""
        return self.finish() if self._stopped else None

    @property
    def fake(self) -> bool:
        return self.settings.fake

    # -- entering and leaving -------------------------------------------------------------
    def __enter__(self) -> "Capture":
        self._started = now()
        self.namer.entry = sys._getframe(1)
        self._modes = (fake_modes() if self.fake else []) + self.settings.engine.contexts() + self._watchers  # fake below ours
        self.ground.start()
        entered = []
        try:
            for mode in self._modes:
                mode.__enter__()
                entered.append(mode)
        except BaseException:
            for mode in reversed(entered):
                mode.__exit__(None, None, None)
            self.ground.stop()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            self.rec.guard.call(self.namer.scan_stack, sys._getframe(1))
            if exc is not None:   # the failing frames' variables name what the program made
                self.rec.guard.call(self.namer.scan_traceback, exc.__traceback__)
        finally:
            for mode in reversed(self._modes):
                mode.__exit__(None, None, None)
            self._modes, self._watchers = [], []   # they hold this capture (a closure), and it the trace
            self.namer.entry = None
        if exc is not None and not (isinstance(exc, SystemExit) and exc.code in (None, 0)):
            self.record_error(exc)
        self.stop()
        return False

    def name_variables(self, namespace: Iterable[tuple[str, object]] | Mapping) -> None:
        """Name storages after the variables of ``namespace`` (a script's or a notebook's
        globals, which the stack scan does not reach)."""
        self.rec.guard.call(self.namer.scan, namespace)

    @property
    def fault(self) -> dict | None:   # gradmem's own first failure in a hook (type, message, traceback, step)
        return self.rec.guard.failure

    def record_error(self, exc: BaseException) -> None:
        self._error = record_error(self.rec, exc)

    def stop(self) -> None:
        """Stop recording (leaving the block does it): nothing is recorded after this."""
        if not self._stopped:
            self._stopped = True
            self.ground.stop()
            self.rec.active = False
            self.storages.close()

    def finish(self) -> Trace:
        if self._trace is None:
            self.stop()
            self.storages.settle()
            meta = build_meta(self.settings, self._started, self._error or self.fault, self.rec, self.ground.notes,
                              distributed=rank_meta(self.settings.ranks, self.settings.device))
            self._trace = Trace(meta, *self.rec.events_and_shapes())
            self.rec.events = []   # the trace has them: the recorder sits in reference cycles
        return self._trace


# ``gradmem.capture`` is this package and, called, the public function (gradmem.session)
from .. import callable_module  # noqa: E402

callable_module(sys.modules[__name__])
