"""Torch-level calls: backward calls, the graph each forward call builds, retain_grad.

A ``TorchFunctionMode`` sits above autograd, so after each call the outputs carry their
``grad_fn``: that is when new backward nodes are discovered and their saved slots read.
It also sees ``Tensor.backward``, ``torch.autograd.backward`` and ``torch.autograd.grad``
(all overridable), which are handed to ``BackwardCalls``.
"""
from __future__ import annotations

import sys
import warnings

import torch
from torch.overrides import TorchFunctionMode

from .backward import BackwardCalls
from .cursor import Cursor
from .facts import TensorFacts
from .fake import making_parameter
from .grads import GradWatcher
from .graph import grad_fn_of

BACKWARD_FUNCS = {torch.Tensor.backward: "backward", torch.autograd.backward: "backward",
                  torch.autograd.grad: "grad"}
RETAIN_GRAD = torch.Tensor.retain_grad
GRAD_PROPERTY = torch._C.TensorBase.grad   # reading t.grad: torch function sees its __get__


class CallWatcher(TorchFunctionMode):
    def __init__(self, cursor: Cursor, facts: TensorFacts, grads: GradWatcher, backward: BackwardCalls,
                 retain_grad: str = "as-written", fake: bool = False):
        super().__init__()
        self.guard = facts.rec.guard
        self.cursor = cursor
        self.facts = facts
        self.grads = grads
        self.backward = backward
        self.retain_grad = retain_grad   # as-written | off | on
        self.fake = fake

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        guard = self.guard
        if guard.broken or (self.fake and making_parameter()):   # fake-tensor plumbing a real run never calls
            return func(*args, **kwargs)
        kind = BACKWARD_FUNCS.get(func) if not isinstance(func, type) else None
        if kind is not None:
            return self.backward.run(kind, func, args, kwargs, sys._getframe(1))
        if func is RETAIN_GRAD:
            return self._retain(func, args, kwargs)
        if getattr(func, "__self__", None) is GRAD_PROPERTY:
            return self._grad(func, args, sys._getframe(1))
        guard.call(self._inputs, args)
        self.cursor.fresh_call = True
        try:
            out = func(*args, **kwargs)
        finally:
            self.cursor.fresh_call = False
        guard.call(self._outputs, out)
        return out

    def _grad(self, func, args, caller):
        """``t.grad``: torch may warn that a non-leaf has no .grad. Without this, the
        warning names this file (the call happens here); it belongs to the program's line,
        and under --retain-grad off it is gradmem that took the .grad away: say so."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = func(*args)
        for w in caught:
            text = str(w.message)
            if self.retain_grad == "off" and "not a leaf Tensor" in text:
                text = ("gradmem --retain-grad off made retain_grad() do nothing, so this non-leaf has no .grad "
                        f"(it reads None). Torch says: {text}")
            warnings.warn_explicit(text, w.category, caller.f_code.co_filename, caller.f_lineno,
                                   module=caller.f_globals.get("__name__"), registry=caller.f_globals.setdefault(
                                       "__warningregistry__", {}))
        return out

    def __exit__(self, *exc):
        """Leaving a fake run: real parameters it gave fake .grads get None back."""
        out = super().__exit__(*exc)
        if self.fake:
            self.grads.drop_fake_grads()
        return out

    def _retain(self, func, args, kwargs):
        if self.retain_grad == "off":
            return None
        out = func(*args, **kwargs)
        self.guard.call(self.grads.retaining, args[0])
        return out

    def _inputs(self, args) -> None:
        """Facts about tensors passed in: catches nodes made by calls this mode never saw
        (``Function.apply`` inside library code) and parameters used by modules."""
        for a in args:
            if isinstance(a, torch.Tensor):
                if a.requires_grad:
                    self.facts.record(a, track=False)
            elif isinstance(a, (list, tuple)):
                for b in a:
                    if isinstance(b, torch.Tensor) and b.requires_grad:
                        self.facts.record(b, track=False)

    def _outputs(self, out) -> None:
        if isinstance(out, torch.Tensor):
            self._output(out)
        elif isinstance(out, (list, tuple)):
            for t in out:
                if isinstance(t, torch.Tensor):
                    self._output(t)

    def _output(self, t: torch.Tensor) -> None:
        if not t.requires_grad:
            return
        self.facts.record(t)
        if self.retain_grad == "on" and not t.retains_grad and grad_fn_of(t) is not None:
            t.retain_grad()
            self.grads.retaining(t)
