"""Which capture engine a run uses, and why: the one fact ``gradmem doctor`` and the trace's
``capture_engine`` report.

``native`` needs the extension (a C++ compiler the first time), real tensors (fake tensors
never reach an allocator, so the dispatch path records them) and no other profiler running
(torch keeps one profiler state per thread). ``python`` always works.
"""
from __future__ import annotations

from typing import NamedTuple

from . import loader

ENGINES = ("auto", "python", "native")
DEFAULT = "python"


class Choice(NamedTuple):
    engine: str            # python | native
    native: object | None  # when native: the engine's parts for one capture (engine.NativeSession)
    reason: str            # why this engine, in one sentence


def profiler_running() -> bool:
    import torch
    return bool(torch._C._autograd._profiler_enabled())


def choose(requested: str = DEFAULT, fake: bool = False, progress=None) -> Choice:
    """The engine for one run. ``requested="native"`` that cannot be had falls back to the
    Python engine with the reason (gradmem never fails a run for its own engine)."""
    if requested not in ENGINES:
        raise ValueError(f"unknown capture engine {requested!r}: choose one of {', '.join(ENGINES)}")
    if requested == "python":
        return Choice("python", None, "the Python engine was asked for")
    if fake:
        return Choice("python", None, "fake tensors never reach an allocator: the Python dispatch engine records them")
    if profiler_running():
        return Choice("python", None, "another torch profiler is running, and torch allows one at a time")
    ext = loader.load(progress)
    if ext is None:
        return Choice("python", None, loader.why_not() or "the native engine could not be loaded")
    if ext.running():
        return Choice("python", None, "another gradmem capture is using the native engine")
    from .engine import NativeSession
    return Choice("native", NativeSession(ext), "the native extension is built" + (" (asked for)" if requested == "native" else ""))
