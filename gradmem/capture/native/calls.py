"""The native engine's few torch-level seams, with no Python run per op.

The Python engine's function watcher (``capture/calls.py``) is a ``TorchFunctionMode``:
torch calls it for every op, which costs more than the whole native recorder. On the
native engine the recorder reads the tensor facts of each top-level op in C++ (which
tensors require grad, their ``grad_fn``), and what remains is caught where it happens:

- backward calls: ``torch.autograd.backward`` and ``torch.autograd.grad`` (which
  ``Tensor.backward`` calls by that name), swapped for the capture's duration, so the
  engine's first gradient (``ones_like`` of the loss) is made inside the call, as the
  Python engine sees it; and ``torch.autograd._engine_run_backward``, which both reach
  (torch.compiler patches the same name), for a ``backward`` or ``grad`` imported
  before the capture began;
- ``Tensor.retain_grad``, swapped likewise;
- the graph: discovered from the backward roots and from the live tensors the recorder
  saw, at each backward call and when the capture ends (``NativeFacts.flush``).

Every swap is undone when the capture ends, also when it fails. As under the Python
engine's mode, a backward call made while one runs (a hook's ``autograd.grad``) is not a
call of its own: the mode is off inside its handler.
"""
from __future__ import annotations

import sys
import weakref
from functools import partial

import torch
import torch.autograd as _autograd
import torch.autograd.graph as _graph

from ..backward import BackwardCalls
from ..calls import CallWatcher
from ..facts import TensorFacts
from ..grads import GradWatcher
from ...roles import Phase


def function_watcher(settings, rec, cursor, storages, graph, namer):
    """The watcher of torch-level calls and the parts it drives (facts, gradients, backward
    calls): the native seams where the native engine runs and ``--retain-grad`` is
    as-written, else the Python engine's per-call ``CallWatcher``."""
    native = settings.engine.native
    if native is None or settings.retain_grad != "as-written":
        grads = GradWatcher(rec, storages)
        facts = TensorFacts(rec, storages, graph, grads)
        backward = BackwardCalls(rec, cursor, graph, grads, namer, facts)
        return CallWatcher(cursor, facts, grads, backward, settings.retain_grad, settings.fake)
    grads = NativeGradWatcher(rec, storages, native)
    facts = NativeFacts(rec, storages, graph, grads, native.ext)
    # a leaf the program named: its facts, when its storage is the capture's (one made before it
    # and never used stays out of the trace, as on the Python engine)
    namer.on_leaf = partial(facts.record, track=False)
    namer.grad_watch = (native.ext.watch_params, native.ext.name_grads)
    backward = BackwardCalls(rec, cursor, graph, grads, namer, facts)
    backward.saved_pause = (native.ext.pause_saved, native.ext.resume_saved)
    return NativeCalls(backward, facts, grads, graph)


class NativeFacts(TensorFacts):
    """Tensor facts as on the Python engine; the recorder hands over, at each flush, the
    live tensors it recorded facts for (their nodes are discovered, their gradients
    hooked) and the tensors on storages it never saw allocated (recorded here)."""

    def __init__(self, rec, storages, graph, grads, ext):
        super().__init__(rec, storages, graph, grads)
        self.ext = ext
        self._foreign: list[weakref.ref] = []   # non-leaf tensors recorded here

    def flush(self) -> list:
        """The live tensors whose graph to discover now; sets the forward outputs whose
        gradients are hooked."""
        live, foreign = self.ext.flush()
        outputs = [weakref.ref(t) for t in live]
        self.grads._outputs = []
        for t in foreign:
            self.record(t)   # a non-leaf lands in grads._outputs
        self._foreign = [r for r in self._foreign if r() is not None] + self.grads._outputs
        self.grads._outputs = outputs + self._foreign
        return live


class NativeGradWatcher(GradWatcher):
    """Leaf gradients of a ``backward`` call recorded by the native recorder when each
    leaf's AccumulateGrad node ends (the gradient that arrived and the ``.grad`` as it
    landed, with its values): no Python hook per leaf. ``autograd.grad`` accumulates
    nothing, so there the Python hooks stay."""

    def __init__(self, rec, storages, session):
        super().__init__(rec, storages)
        self.session = session

    def hook_leaves(self, leaves, call: str = "backward") -> list:
        """For a ``backward`` call the graph's walk (``NativeGraph.leaves_of``) watched the
        leaves already."""
        if call != "backward":
            return super().hook_leaves(leaves, call)
        return []

    def settle(self) -> None:
        """After a backward call: ids for the gradients the recorder could not name (a
        ``.grad`` made before the capture, accumulated into in place)."""
        names, see = self.session.leaf_names, self.storages.see
        for index, which, t in self.session.ext.unnamed_leaf_grads():
            names[(index, which)] = see(t)


class NativeCalls:
    """Entered in the function watcher's place: swaps in the backward-call and
    ``retain_grad`` seams, and discovers what is still alive when the capture ends."""

    def __init__(self, backward: BackwardCalls, facts: NativeFacts, grads, graph):
        self.backward = backward
        self.facts = facts
        self.grads = grads
        self.graph = graph
        self.guard = facts.rec.guard
        self._saved: list[tuple] = []

    def __enter__(self) -> "NativeCalls":
        run = _autograd._engine_run_backward
        self._saved = [(_autograd, "_engine_run_backward", run), (_graph, "_engine_run_backward", _graph._engine_run_backward),
                       (_autograd, "backward", _autograd.backward), (_autograd, "grad", _autograd.grad),
                       (torch.Tensor, "retain_grad", torch.Tensor.__dict__.get("retain_grad"))]
        engine = self._engine_call(run)
        _autograd._engine_run_backward = engine
        _graph._engine_run_backward = engine
        _autograd.backward = self._user_call("backward", _autograd.backward)
        _autograd.grad = self._user_call("grad", _autograd.grad)
        torch.Tensor.retain_grad = self._retain_call(torch.Tensor.retain_grad)
        return self

    def __exit__(self, *exc) -> bool:
        try:
            self.guard.call(self._discover_live)
        finally:
            for owner, name, value in reversed(self._saved):
                if value is None:
                    delattr(owner, name)
                else:
                    setattr(owner, name, value)
            self._saved = []
        return False

    def _discover_live(self) -> None:
        """Nodes still alive at the end (a forward that no backward ran) get their ids and
        slots, as the Python engine gives them when each op returns."""
        self.graph.discover_from(self.facts.flush())

    def _engine_call(self, run):
        backward = self.backward

        def engine_run_backward(t_outputs, *args, **kwargs):
            if backward.cursor.in_backward or self.guard.broken:
                return run(t_outputs, *args, **kwargs)
            call = "backward" if kwargs.get("accumulate_grad", True) else "grad"
            retain = args[1] if len(args) > 1 else kwargs.get("retain_graph")
            create = args[2] if len(args) > 2 else kwargs.get("create_graph")
            return self._run(call, run, (t_outputs, *args), kwargs, sys._getframe(1),
                             retain_graph=retain, create_graph=create)
        return engine_run_backward

    def _user_call(self, call: str, func):
        backward = self.backward

        def user_call(*args, **kwargs):
            if backward.cursor.in_backward or self.guard.broken:
                return func(*args, **kwargs)
            return self._run(call, func, args, kwargs, sys._getframe(1))
        user_call.__wrapped__ = func
        user_call.__doc__ = func.__doc__
        return user_call

    def _run(self, call: str, func, args, kwargs, frame, **options):
        """One backward call, with a progress report before and after it: no step begins in
        Python on this engine, so these are the moments Python can say how far the run is."""
        rec, guard = self.facts.rec, self.guard
        guard.call(rec.progress, Phase.FORWARD, True)
        try:
            return self.backward.run(call, func, args, kwargs, frame, **options)
        finally:
            guard.call(rec.progress, Phase.BACKWARD, True)

    def _retain_call(self, original):
        grads, guard = self.grads, self.guard

        def retain_grad(tensor):
            out = original(tensor)
            if not guard.broken:
                guard.call(grads.retaining, tensor)
            return out
        retain_grad.__doc__ = original.__doc__
        return retain_grad
