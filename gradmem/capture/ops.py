"""Every aten op, forward and backward: the steps, and the storages each op creates.

A ``TorchDispatchMode`` sees each op below autograd, on whichever thread runs it (the
engine carries the mode to its device threads). In backward, ops belong to the node
that is running (``torch._C._current_autograd_node()``); each other op is a step.
"""
from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from .fake import unrecorded

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
    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        """Torch wraps a mode's ``__torch_dispatch__`` in ``torch._dynamo.disable`` unless
        this says no: the wrapper imports ``torch._dynamo`` at the first op (2-5 s of every
        run's start-up, measured in benchmarks/startup.py) and adds a frame to every op.
        Nothing here is compiled: under a dispatch mode torch.compile runs eagerly."""
        return False

    def __init__(self, cap):
        super().__init__()
        self.cap = cap

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        cap = self.cap
        kwargs = kwargs or {}
        if cap.ops_paused or cap.rec.guard.broken or (cap.fake and unrecorded(func)):   # gradmem's own op,
            return func(*args, **kwargs)          # gradmem broken, or fake-tensor plumbing a real run never dispatches
        try:
            name = op_name(func)
            has_inputs, grad_args = cap.begin_op(name, _tensors(args, kwargs))
        except Exception as exc:   # gradmem's fault: the op still runs as without gradmem
            cap.rec.guard.failed(exc)
            return func(*args, **kwargs)
        out = func(*args, **kwargs)
        try:
            cap.op_outputs(name, out, not has_inputs, grad_args)
        except Exception as exc:
            cap.rec.guard.failed(exc)
        return out
