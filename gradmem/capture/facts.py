"""Tensor facts: that a tensor requires grad, whether it is a leaf, which node made it.

Recorded once per (storage, node), the first time the function watcher or a backward
call sees the tensor; a non-leaf's gradient is then watched for (``GradWatcher``).
"""
from __future__ import annotations

import torch

from ..events import EventKind
from .grads import GradWatcher
from .graph import Graph
from .recorder import Recorder
from .storages import Storages

TENSOR = EventKind.TENSOR.value


class TensorFacts:
    def __init__(self, rec: Recorder, storages: Storages, graph: Graph, grads: GradWatcher):
        self.rec = rec
        self.storages = storages
        self.graph = graph
        self.grads = grads
        self._seen: set[tuple] = set()

    def flush(self) -> list:
        """More tensors whose graph to discover at a backward call: none here, where facts are recorded
        as each call returns (the native engine's ``NativeFacts`` hands over its own)."""
        return []

    def record(self, t: torch.Tensor, track: bool = True) -> None:
        """With ``track=False`` only storages already seen by an op are considered."""
        try:
            grad_fn = t.grad_fn
        except RuntimeError:   # a view made under no_grad and then modified in place: torch
            return             # refuses to say (nn.Embedding's padding row); nothing to record
        sid = self.storages.see(t) if track else self.storages.lookup(t)
        nid = self.graph.node_of(t, grad_fn) if grad_fn is not None else None
        if sid is None or (sid, nid) in self._seen:
            return
        self._seen.add((sid, nid))
        if nid is None:
            self.rec.emit(TENSOR, storage=sid, requires_grad=True, leaf=True)
            return
        self.rec.emit(TENSOR, storage=sid, requires_grad=True, leaf=False, node=nid, output_nr=t.output_nr)
        self.grads.forward_output(t)
