"""Every aten op, forward and backward: the steps, and the storages each op creates.

A ``TorchDispatchMode`` sees each op below autograd, on whichever thread runs it (the
engine carries the mode to its device threads). In backward, ops belong to the node
that is running (``torch._C._current_autograd_node()``); each other op is a step.
"""
from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ..roles import Phase
from .cursor import Cursor
from .fake import unrecorded
from .graph import Graph
from .recorder import Recorder
from .storages import Storages

LIFT_OPS = frozenset({"lift_fresh", "lift_fresh_copy", "lift"})
_op_names: dict = {}


def op_name(func) -> str:
    name = _op_names.get(func)
    if name is None:
        name = getattr(func, "_opname", None) or str(func)
        _op_names[func] = name
    return name


def _tensors(args, kwargs):
    for a in args:
        if isinstance(a, torch.Tensor):
            yield a
        elif isinstance(a, (list, tuple)):
            for b in a:
                if isinstance(b, torch.Tensor):
                    yield b
    if kwargs:
        for a in kwargs.values():
            if isinstance(a, torch.Tensor):
                yield a


class OpWatcher(TorchDispatchMode):
    def __init__(self, rec: Recorder, cursor: Cursor, storages: Storages, graph: Graph, fake: bool = False):
        super().__init__()
        self.rec = rec
        self.cursor = cursor
        self.storages = storages
        self.graph = graph
        self.fake = fake

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        """Torch wraps a mode's ``__torch_dispatch__`` in ``torch._dynamo.disable`` unless
        this says no: the wrapper imports ``torch._dynamo`` at the first op (2-5 s of every
        run's start-up, measured in benchmarks/startup.py) and adds a frame to every op.
        Nothing here is compiled: under a dispatch mode torch.compile runs eagerly."""
        return False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        guard = self.rec.guard
        if self.cursor.ops_paused or guard.broken or (self.fake and unrecorded(func)):   # gradmem's own op,
            return func(*args, **kwargs)      # gradmem broken, or fake-tensor plumbing a real run never dispatches
        try:
            name = op_name(func)
            has_inputs, grad_args = self._begin(name, _tensors(args, kwargs))
        except Exception as exc:   # gradmem's fault: the op still runs as without gradmem
            guard.failed(exc)
            return func(*args, **kwargs)
        out = func(*args, **kwargs)
        try:
            self._outputs(name, out, not has_inputs, grad_args)
        except Exception as exc:
            guard.failed(exc)
        return out

    def _begin(self, name: str, inputs) -> tuple[bool, bool]:
        """Start the op's step; returns (has tensor inputs, any input requires grad)."""
        cursor = self.cursor
        cursor.fresh_call = False
        cursor.in_node = False
        if cursor.depth:
            nid = self.graph.current_node()
            cursor.in_node = nid is not None
            if nid is None:
                self.rec.begin_step(Phase.BACKWARD, name)
            elif nid != cursor.node:
                self.rec.begin_step(Phase.BACKWARD, self.graph.name_of(nid), node=nid)
        else:
            self.rec.begin_step(Phase.FORWARD, name)
        if name in LIFT_OPS:   # torch.tensor(data): the input is the new tensor itself
            return False, False
        has_inputs = grad_args = False
        see = self.storages.see
        for t in inputs:
            has_inputs = True
            grad_args = grad_args or t.requires_grad
            see(t)
        return has_inputs, grad_args

    def _outputs(self, name: str, out, factory: bool, grad_args: bool) -> None:
        # grad mode on inside a running backward node (without create_graph) means a
        # forward pass is being recomputed, as torch.utils.checkpoint does
        cursor = self.cursor
        recompute = cursor.in_node and torch.is_grad_enabled() and not cursor.create_graph
        see = self.storages.see
        for t in (out if isinstance(out, (list, tuple)) else (out,)):
            if isinstance(t, torch.Tensor):
                see(t, name, preexisting=False, factory=factory, recompute=recompute, grad_args=grad_args)
