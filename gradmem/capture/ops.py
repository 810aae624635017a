"""Every aten op, forward and backward: the steps, and the storages each op creates.

A ``TorchDispatchMode`` sees each op below autograd, on whichever thread runs it (the
engine carries the mode to its device threads). In backward, ops belong to the node
that is running (``torch._C._current_autograd_node()``); each other op is a step.
"""
from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from .fake import unrecorded
from .ranks import is_collective

_op_names: dict = {}
_collectives: dict = {}   # func -> is it a c10d collective (cached: the check is per op)


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
    def __init__(self, cap):
        super().__init__()
        self.cap = cap

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        cap = self.cap
        if cap.ops_paused or (cap.fake and unrecorded(func)):   # gradmem's own op, or fake-tensor
            return func(*args, **(kwargs or {}))                # plumbing a real run never dispatches
        name = op_name(func)
        has_inputs, grad_args = cap.begin_op(name, _tensors(args, kwargs))
        collective = _collectives.get(func)
        if collective is None:
            collective = _collectives[func] = is_collective(func)
        if collective:
            cap.collectives.seen(name, args, kwargs)
        out = func(*args, **(kwargs or {}))
        cap.op_outputs(name, out, not has_inputs, grad_args)
        return out
