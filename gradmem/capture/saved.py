"""Saved-tensor hooks: when autograd saves a tensor, when backward uses it, when its
slot is released.

``pack`` returns a small ``Packed`` object that lives exactly as long as the saved slot;
its ``__del__`` is the "slot released" event. It holds what autograd would have held
anyway (the tensor, or what an outer pack hook returned), and nothing else.

Hooks nest as a stack and only the innermost pair runs. If hooks were already installed
when the capture started (the user's own, ``save_on_cpu``), ours wrap them: the outer
pack still runs, so the program behaves as it would without gradmem.
"""
from __future__ import annotations

import itertools

import torch

from ..trace import KIND
from .recorder import Recorder


class Packed:
    __slots__ = ("pid", "inner", "rec")

    def __init__(self, pid: int, inner, rec: Recorder):
        self.pid = pid
        self.inner = inner
        self.rec = rec

    def __del__(self):
        if self.rec.active:
            self.rec.emit(KIND.RELEASED, pack=self.pid)


class SavedTensorWatcher:
    def __init__(self, rec: Recorder, storages, node_of_current):
        self.rec = rec
        self.storages = storages
        self.node_of_current = node_of_current   # () -> id of the backward node running, or None
        self.fresh_call = False                  # set by the function watcher: no op ran yet
        self._next = itertools.count(1)
        self._outer = torch._C._autograd._top_saved_tensors_default_hooks(False)
        self._cm = None

    def pack(self, t: torch.Tensor) -> Packed:
        pid = next(self._next)
        sid = self.storages.see(t)
        step = self.rec.step + 1 if self.fresh_call else None   # inputs are saved before the op runs
        self.rec.emit(
            KIND.SAVED, step=step, pack=pid, storage=sid, shape=tuple(t.shape),
            dtype=str(t.dtype).replace("torch.", ""), numel=t.numel(),
            element_size=t.element_size(),
        )
        inner = self._outer[0](t) if self._outer else t
        return Packed(pid, inner, self.rec)

    def unpack(self, p: Packed) -> torch.Tensor:
        self.rec.emit(KIND.UNPACKED, pack=p.pid, node=self.node_of_current())
        return self._outer[1](p.inner) if self._outer else p.inner

    def __enter__(self):
        self._cm = torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack)
        self._cm.__enter__()
        return self

    def __exit__(self, *exc):
        self._cm.__exit__(*exc)
        return False
