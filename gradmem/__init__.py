"""gradmem: which tensors backprop needs, and when they are allocated and freed.

``gradmem.capture()`` records a block of PyTorch code; ``gradmem.analyze(trace)`` turns a
trace into tables. Analysis and rendering never import torch, so a saved trace can be
re-rendered anywhere.
"""
from __future__ import annotations

import types

from .trace import Trace, read_trace, write_trace
from .version import __version__


class _CallableModule(types.ModuleType):
    """``gradmem.capture`` is both the capture package and the public function: importing
    the package makes ``gradmem.capture`` the module, so the module answers the call. The
    call returns a ``Session`` (gradmem/session.py): the capture with its results."""

    def __call__(self, scenario: str = "", params: dict | None = None, retain_grad: str = "as-written",
                 fake: bool = False, verify: bool = True, engine: str = "auto"):
        """Record what a block of PyTorch code allocates, saves and frees.
        ``fake=True`` runs the block on fake tensors: an estimate, with no data allocated.
        ``verify=False`` skips the allocator's own record (see capture/truth.py).
        ``engine``: python, native or auto, as ``gradmem profile --engine``."""
        from .session import Session
        return Session(scenario, params, retain_grad, fake, verify, engine=engine)


def callable_module(module: types.ModuleType) -> None:
    """Called by gradmem/capture/__init__.py on itself (see ``_CallableModule``)."""
    module.__class__ = _CallableModule


def __getattr__(name: str):
    if name == "capture":   # imported on first use: it needs torch
        import importlib   # not `from . import capture`: that asks this __getattr__ again
        return importlib.import_module(".capture", __name__)   # the module is callable
    if name == "Capture":   # the public class: a capture with its results (gradmem.session)
        from .session import Session
        return Session
    raise AttributeError(f"module 'gradmem' has no attribute {name!r}")


def analyze(trace: Trace):
    """Tables and summary for a trace (pandas; no torch needed)."""
    from .analysis import analyze as _analyze
    return _analyze(trace)


def load_ipython_extension(shell) -> None:
    """``%load_ext gradmem``: adds the ``%%gradmem`` cell magic (see gradmem.magic)."""
    from .magic import load_ipython_extension as load
    load(shell)


__all__ = ["Capture", "capture", "Trace", "read_trace", "write_trace", "analyze", "__version__"]
