"""The collector paused while gradmem builds its own plain data (tables, reports).

A trace of 200,000 events keeps a few million objects alive; every full collection walks
them all, and building tables and reports allocates enough to trigger dozens: on a
30-step MLP they cost about a fifth of analysis and writing. What is built here holds no
reference cycles worth collecting meanwhile; the collector runs again as soon as the
block ends. Never used around the profiled program.
"""
from __future__ import annotations

import contextlib
import gc


@contextlib.contextmanager
def paused():
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
