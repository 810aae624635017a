"""Where the run is: the step in progress, its phase and backward node, how deep in
backward calls, and whether gradmem itself is running an op.

The one owner of this state: the watchers read it and ask it to move, and only the
recorder's ``begin_step`` advances the step (it also emits the step event). Written from
the autograd engine's device threads too, so the step counter moves under a lock.
"""
from __future__ import annotations

import threading

import torch

from ..roles import Phase


class Cursor:
    def __init__(self):
        self.step = 0
        self.phase = Phase.FORWARD
        self.node: int | None = None   # backward node whose step is in progress
        self.depth = 0                 # backward calls in progress (nested: autograd.grad in a hook)
        self.backward_index = 0        # how many backward calls began so far
        self.create_graph = False      # the innermost backward call builds a graph of its own
        self.in_node = False           # the op running belongs to a backward node
        self.fresh_call = False        # a torch function began and none of its ops ran yet
        self.ops_paused = False        # gradmem runs an op of its own (see paused_ops)
        self._lock = threading.Lock()

    @property
    def in_backward(self) -> bool:
        return self.depth > 0

    def advance(self, phase: Phase, node: int | None = None) -> int:
        """The next step begins; returns its number."""
        with self._lock:
            self.step += 1
            self.phase = phase
            self.node = node
            return self.step

    def enter_backward(self, create_graph: bool) -> bool:
        """A backward call begins; returns the outer call's create_graph for ``leave_backward``."""
        self.backward_index += 1
        self.depth += 1
        outer, self.create_graph = self.create_graph, create_graph
        return outer

    def leave_backward(self, outer_create_graph: bool) -> None:
        self.depth -= 1
        self.create_graph = outer_create_graph
        self.node = None

    def paused_ops(self) -> "_Paused":
        """Run an op of gradmem's own without recording it. Other modes (FakeTensorMode)
        still see it, so under fake tensors its result is fake too. A plain object, not a
        generator: it runs for every saved tensor."""
        return _Paused(self)


class _Paused:
    __slots__ = ("cursor", "off")

    def __init__(self, cursor: Cursor):
        self.cursor = cursor
        self.off = torch._C.DisableTorchFunction()

    def __enter__(self) -> None:
        self.cursor.ops_paused = True
        self.off.__enter__()

    def __exit__(self, *exc) -> bool:
        try:
            self.off.__exit__(*exc)
        finally:
            self.cursor.ops_paused = False
        return False
