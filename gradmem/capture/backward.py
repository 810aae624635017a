"""One backward call (``Tensor.backward``, ``torch.autograd.backward``/``grad``): hooks on
for the graph it runs, the call itself, hooks off.

Before the call: discover the graph from the roots, name what the program holds, record
the leaves' facts, put node and gradient hooks on. After it: the retained gradients, the
names again, and (outside every backward call) a forward step for the program's own frees.
"""
from __future__ import annotations

import torch

from ..events import EventKind
from ..roles import Phase
from .cursor import Cursor
from .facts import TensorFacts
from .grads import GradWatcher
from .graph import Graph
from .names import Namer
from .recorder import Recorder

AFTER_BACKWARD = "(after backward)"


class BackwardCalls:
    # (pause, resume) of the saved-tensor hooks around a backward call that builds no graph
    # (the native engine's: recorder.cpp, pause_saved); None keeps them on
    saved_pause = None

    def __init__(self, rec: Recorder, cursor: Cursor, graph: Graph, grads: GradWatcher, namer: Namer,
                 facts: TensorFacts):
        self.rec = rec
        self.cursor = cursor
        self.graph = graph
        self.grads = grads
        self.namer = namer
        self.facts = facts

    def run(self, call: str, func, args, kwargs, caller, retain_graph=None, create_graph=None):
        """``func(*args, **kwargs)`` under the hooks; the roots are ``args[0]``. The flags are
        read from ``kwargs`` unless given (the native engine's seam passes them positionally)."""
        guard = self.rec.guard
        try:
            roots = _roots_of(args, kwargs)
            handles = self._hook(roots, caller, call)
            roots = tuple(self.facts.storages.see(t) for t in roots)
        except Exception as exc:   # gradmem's fault: backward still runs as without gradmem
            guard.failed(exc)
            return func(*args, **kwargs)
        create_graph = bool(kwargs.get("create_graph") if create_graph is None else create_graph)
        retain_graph = bool(kwargs.get("retain_graph") if retain_graph is None else retain_graph)
        outer = self.cursor.enter_backward(create_graph)
        self.rec.emit(EventKind.BACKWARD_BEGIN, index=self.cursor.backward_index, call=call, roots=roots,
                      retain_graph=retain_graph, create_graph=create_graph)
        paused = self.saved_pause is not None and not create_graph and guard.call(self.saved_pause[0])
        try:
            return func(*args, **kwargs)
        finally:
            if paused:
                guard.call(self.saved_pause[1])
            self.cursor.leave_backward(outer)
            for h in handles:
                h.remove()
            guard.call(self._after, caller)

    def _hook(self, roots: list, caller, call: str = "backward") -> list:
        """Discover and name the graph, then put the hooks on; returns their handles."""
        self.graph.discover_from(roots + self.facts.flush())   # flush: what the native recorder saw
        self.namer.scan_stack(caller, walked=False)   # the scan after the call walks the modules
        leaves = self.graph.leaves_of(roots, call)
        for leaf in leaves:
            self.facts.record(leaf)
        return (self.graph.hook_nodes([t.grad_fn for t in roots]) + self.grads.hook_tensors()
                + self.grads.hook_leaves(leaves, call))

    def _after(self, caller) -> None:
        # the latest call's index, as before: a nested call's end names the nested call
        self.rec.emit(EventKind.BACKWARD_END, index=self.cursor.backward_index)
        self.grads.settle()
        self.grads.record_retained()
        self.namer.scan_stack(caller)
        if not self.cursor.in_backward:   # frees from here on are the program's, not the engine's
            self.rec.begin_step(Phase.FORWARD, AFTER_BACKWARD)


def _roots_of(args, kwargs) -> list:
    first = args[0] if args else kwargs.get("tensors", kwargs.get("outputs"))
    items = first if isinstance(first, (list, tuple)) else [first]
    return [t for t in items if isinstance(t, torch.Tensor) and t.grad_fn is not None]
