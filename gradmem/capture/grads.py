"""Gradient hooks: each gradient as it arrives for a tensor, each leaf's ``.grad`` as it
lands, and the copies ``retain_grad()`` keeps. A small ``.grad`` carries its values as it
lands: accumulation changes it in place after it was made.

Tensors are only weakly referenced here; hooks are registered for one backward call and
removed when it ends.
"""
from __future__ import annotations

import weakref
from functools import partial

import torch

from ..events import EventKind
from .values import _is_fake, preview_now


class GradWatcher:
    def __init__(self, rec, storages):
        self.rec = rec
        self.storages = storages
        self._outputs: list[weakref.ref] = []   # forward outputs that require grad
        self._retaining: list[weakref.ref] = []  # tensors retain_grad() was called on
        self._real_leaves: list[weakref.ref] = []  # real leaves a fake run gave a fake .grad

    def forward_output(self, t: torch.Tensor) -> None:
        self._outputs.append(weakref.ref(t))

    def retaining(self, t: torch.Tensor) -> None:
        self._retaining.append(weakref.ref(t))

    def _alive(self, refs: list) -> list:
        alive = [r for r in refs if r() is not None]
        refs[:] = alive
        return [r() for r in alive]

    def hook_tensors(self) -> list:
        handles = []
        for t in self._alive(self._outputs):
            if t.grad_fn is not None:
                handles.append(t.register_hook(partial(self.rec.guard.call, self._grad, self.storages.see(t))))
        return handles

    def settle(self) -> None:
        """After a backward call (the native engine names what its recorder saw here)."""

    def hook_leaves(self, leaves, call: str = "backward") -> list:
        """The gradient as it arrives (also for autograd.grad, which accumulates nothing),
        and the .grad as it lands."""
        handles = []
        for leaf in leaves:
            handles.append(leaf.register_hook(partial(self.rec.guard.call, self._grad, self.storages.see(leaf))))
            handles.append(leaf.register_post_accumulate_grad_hook(partial(self.rec.guard.call, self._leaf)))
        return handles

    def _grad(self, target: int, grad) -> None:
        if grad is not None:
            self.rec.emit(EventKind.GRAD, target=target, grad=self.storages.see(grad), shape=tuple(grad.shape))

    def _leaf(self, leaf: torch.Tensor) -> None:
        if leaf.grad is not None and _is_fake(leaf.grad) and not _is_fake(leaf):
            self._real_leaves.append(weakref.ref(leaf))
        if leaf.grad is not None:
            self.rec.emit(EventKind.LEAF_GRAD, target=self.storages.see(leaf), grad=self.storages.see(leaf.grad),
                          value=preview_now(leaf.grad), shape=tuple(leaf.grad.shape))

    def drop_fake_grads(self) -> None:
        """A --fake run of a model made before the capture gives its real parameters fake
        ``.grad``s, which would break the program's next real step: they go back to None."""
        for leaf in self._alive(self._real_leaves):
            if leaf.grad is not None and _is_fake(leaf.grad):
                leaf.grad = None

    def record_retained(self) -> None:
        for t in self._alive(self._retaining):
            if t.grad is not None:
                self.rec.emit(EventKind.RETAINED, target=self.storages.see(t), grad=self.storages.see(t.grad),
                              value=preview_now(t.grad), shape=tuple(t.grad.shape))
