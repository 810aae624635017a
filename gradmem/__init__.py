"""gradmem: which tensors backprop needs, and when they are allocated and freed.

``gradmem.capture()`` records a block of PyTorch code; ``gradmem.analyze(trace)`` turns a
trace into tables. Analysis and rendering never import torch, so a saved trace can be
re-rendered anywhere.
"""
from __future__ import annotations

from .trace import Trace, read_trace, write_trace
from .version import __version__


def __getattr__(name: str):
    if name in ("capture", "Capture"):   # imported on first use: it needs torch
        import importlib   # not `from . import capture`: that asks this __getattr__ again
        module = importlib.import_module(".capture", __name__)
        return module if name == "capture" else module.Capture   # the module is callable
    raise AttributeError(f"module 'gradmem' has no attribute {name!r}")


def analyze(trace: Trace):
    """Tables and summary for a trace (pandas; no torch needed)."""
    from .analysis import analyze as _analyze
    return _analyze(trace)


def load_ipython_extension(shell) -> None:
    """``%load_ext gradmem``: adds the ``%%gradmem`` cell magic (see gradmem.notebook)."""
    from .notebook import load_ipython_extension as load
    load(shell)


__all__ = ["Capture", "capture", "Trace", "read_trace", "write_trace", "analyze", "__version__"]
