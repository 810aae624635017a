"""Names a user recognises: the program's own variables, module parameters, ``.grad``.

Read from the frames of the profiled program at a few moments (each backward call's start
and end, and the end of the capture). On Python < 3.13, reading ``frame.f_locals`` of a
function frame leaves a snapshot dict in the frame that holds every local alive; we clear
that snapshot straight after reading so the profiler never keeps a tensor alive.
"""
from __future__ import annotations

import inspect
import os
import sys
import weakref
from typing import Iterable, Mapping

import torch

from ..events import EventKind

SKIP_DIRS = (os.path.dirname(torch.__file__), os.path.dirname(os.path.dirname(__file__)))
_SNAPSHOT_LOCALS = sys.version_info < (3, 13)


def _user_frame(frame) -> bool:
    return not frame.f_code.co_filename.startswith(SKIP_DIRS)


def user_line() -> tuple[str, int] | None:
    """The program's own file and line running now (the ``torch.tensor(...)`` call behind a
    ``lift_fresh``), so a report can say where a tensor came from in the user's words."""
    frame = sys._getframe(1)
    while frame is not None and not _user_frame(frame):
        frame = frame.f_back
    return (frame.f_code.co_filename, frame.f_lineno) if frame is not None else None


def _read_locals(frame) -> list[tuple[str, object]]:
    f_locals = frame.f_locals
    items = list(f_locals.items())
    if _SNAPSHOT_LOCALS and frame.f_code.co_flags & inspect.CO_OPTIMIZED:
        f_locals.clear()
    return items


COMPILED_NOTE = {   # by capture engine
    "python": "`{name}` is made by torch.compile. Under gradmem it runs eagerly (a compiled graph "
              "does not run while gradmem's dispatch mode is active), so these figures are those of "
              "eager mode: the compiled graph collapses into one backward node and may save less. "
              "Compare with the allocator's peak measured without gradmem.",
    "native": "`{name}` is made by torch.compile and runs compiled under the native engine: its "
              "backward is one node (CompiledFunctionBackward) holding what the compiled graph saves, "
              "and a first call's compilation (tracing the graph on real tensors) is recorded with the "
              "program's own ops. The figures are the compiled program's, as the allocator counts them.",
}


def _compiled(value) -> bool:
    return hasattr(value, "_torchdynamo_orig_callable") or (
        isinstance(value, torch.nn.Module) and type(value).__name__ == "OptimizedModule")


class Namer:
    def __init__(self, rec, storages):
        self.rec = rec
        self.storages = storages
        self.entry = None   # the frame that entered the capture: the outermost one we read
        self._param_names: dict[int, str] = {}   # id(parameter) -> name, within one scan
        # called with each grad leaf named (the native engine records its facts here: a
        # leaf made by ``torch.randn(..., requires_grad=True)`` requires grad only after
        # its op returned, where the native recorder reads the op's outputs)
        self.on_leaf = None
        # names already given: each scan (before and after every backward call) meets the
        # same parameters again, and analysis reads only a storage's names, not repeats
        self._given: set[tuple] = set()
        # modules walked already: (id, name) -> _Walked. A scan before a backward call
        # passes over them (``walked=False``); the scan after every call names their new
        # ``.grad``s (and any parameter given new storage) from what the walk kept, walking
        # again only a module whose parameters, buffers or children were added or replaced.
        # Walking 200 parameters twice a step was a third of the native engine's cost
        self._walked: dict[tuple, _Walked] = {}
        self._skip_walked = False
        # the native engine's (watch_params, name_grads): new .grads named in C++
        self.grad_watch = None

    def scan_stack(self, start, walked: bool = True) -> None:
        """``walked=False``: modules an earlier scan walked are not walked again."""
        self._skip_walked = not walked
        try:
            with torch._C.DisableTorchFunction():   # reading attributes is not the program's work
                self._scan_stack(start)
        finally:
            self._skip_walked = False

    def _scan_stack(self, start) -> None:
        frame = start
        while frame is not None:
            if _user_frame(frame):
                self._scan(_read_locals(frame))
            if frame is self.entry:
                break
            frame = frame.f_back

    def scan_traceback(self, tb) -> None:
        """The variables of the program's frames that a failure unwound (a run that fails
        before backward has read no names yet)."""
        with torch._C.DisableTorchFunction():
            while tb is not None:
                if _user_frame(tb.tb_frame):
                    self._scan(_read_locals(tb.tb_frame))
                tb = tb.tb_next

    def scan(self, items: Iterable[tuple[str, object]] | Mapping) -> None:
        with torch._C.DisableTorchFunction():
            self._scan(items)

    def _scan(self, items) -> None:
        self._param_names = {}
        if isinstance(items, Mapping):
            items = list(items.items())
        for name, value in items:
            if name.startswith("_"):
                continue
            if isinstance(value, torch.Tensor):
                self._tensor(name, value)
            elif isinstance(value, torch.nn.Module):
                self._module(name, getattr(value, "_orig_mod", value))
            elif isinstance(value, torch.optim.Optimizer):
                self._optimizer(name, value)
            if _compiled(value):
                self.rec.emit(EventKind.NOTE, text=COMPILED_NOTE[self.rec.engine].format(name=name))

    def _tensor(self, name: str, t: torch.Tensor, kind: str = "variable") -> None:
        if self.on_leaf is not None and t.requires_grad and t.is_leaf:
            self.on_leaf(t)
        sid = self.storages.lookup(t)
        if sid is not None:
            self._give(sid, name, kind, tuple(t.shape))
        grad = t.grad if t.is_leaf or t.retains_grad else None
        if grad is not None:
            gid = self.storages.lookup(grad)
            if gid is not None:
                self._give(gid, f"{name}.grad", "grad", tuple(grad.shape))

    def _give(self, sid: int, name: str, source: str, shape: tuple) -> None:
        key = (sid, name, source, shape)
        if key not in self._given:
            self._given.add(key)
            self.rec.emit(EventKind.NAME, storage=sid, name=name, source=source, shape=shape)

    def _module(self, name: str, module: torch.nn.Module) -> None:
        known = self._walked.get((id(module), name))
        if known is not None and known.module() is module:
            if self._skip_walked:   # before a backward call: the scan after it checks the layout
                self._param_names.update(known.labels)   # the optimizer's labels, as the walk gives them
                return
            if known.same(module):
                self._param_names.update(known.labels)
                self._rescan(known)
                return
        params = list(module.named_parameters(prefix=name))
        buffers = list(module.named_buffers(prefix=name))
        for pname, p in params:
            self._tensor(pname, p, "parameter")
        for bname, b in buffers:
            self._tensor(bname, b, "buffer")
        self._param_names.update({id(p): pname for pname, p in params})
        try:
            self._walked[(id(module), name)] = _Walked(module, params, buffers, self._watch(params))
        except TypeError:   # a module class without weak references: walked every time
            pass

    def _watch(self, params: list) -> int | None:
        if self.grad_watch is None or not params:
            return None
        return self.grad_watch[0]([n for n, _ in params], [p for _, p in params])

    def _rescan(self, known: "_Walked") -> None:
        """A walked module again: its parameters (the native engine names their new .grads
        itself and hands back the rest) and buffers."""
        params = known.params
        if known.group is not None:
            params = [params[i] for i in self.grad_watch[1](known.group)]
        for tname, ref in params:
            t = ref()
            if t is not None:
                self._tensor(tname, t, "parameter")
        for bname, ref in known.buffers:
            b = ref()
            if b is not None:
                self._tensor(bname, b, "buffer")

    def _optimizer(self, name: str, opt: torch.optim.Optimizer) -> None:
        params = [p for group in opt.param_groups for p in group["params"]]
        for i, p in enumerate(params):
            label = self._param_names.get(id(p), str(i))
            for key, value in opt.state.get(p, {}).items():
                if isinstance(value, torch.Tensor):
                    sid = self.storages.lookup(value)
                    if sid is not None:
                        self.rec.emit(EventKind.NAME, storage=sid, name=f"{name}.state[{label}].{key}", source="optimizer_state")


_NONE: dict = {}


class _Walked:
    """A module walked once, holding nothing alive: its parameters and buffers by name (weak
    references), and what each of its modules held then (``same``: nothing added or
    replaced since, so the walk would find the same tensors under the same names)."""

    __slots__ = ("module", "params", "labels", "buffers", "subs", "layout", "group")

    def __init__(self, module, params: list, buffers: list, group: int | None):
        self.module = weakref.ref(module)
        self.params = [(n, weakref.ref(p)) for n, p in params]
        self.labels = {id(p): n for n, p in params}
        self.buffers = [(n, weakref.ref(b)) for n, b in buffers]
        self.subs = [weakref.ref(m) for m in module.modules()]
        self.layout = self._layout()
        self.group = group   # the native engine's parameter group (watch_params)

    def _layout(self) -> list | None:
        held = []   # what the modules hold, for a moment: only their ids are kept
        for ref in self.subs:
            m = ref()
            if m is None:
                return None
            d = m.__dict__
            held += d.get("_parameters", _NONE).values()
            held.append(None)
            held += d.get("_buffers", _NONE).values()
            held.append(None)
            held += d.get("_modules", _NONE).values()
            held.append(None)
        return list(map(id, held))

    def same(self, module) -> bool:
        return self.layout is not None and self._layout() == self.layout
