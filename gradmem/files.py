"""The files gradmem writes: their names, in one place, and one way to write them so that a
reader never sees half of one (write beside, then rename)."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

# every writer and reader takes a file's name from here
TRACE = "trace.jsonl"
REPORT = "report.html"
TENSORS_CSV, STEPS_CSV, NODES_CSV, MODULES_CSV, EVENTS_CSV = (
    "tensors.csv", "steps.csv", "nodes.csv", "modules.csv", "events.csv")
SUMMARY = "summary.json"
CHROME = "trace.chrome.json"
MEMORY_VIZ_JSON, MEMORY_VIZ_PICKLE = "memory_viz.json", "memory_viz.pickle"
COMPARISON_CSV, COMPARISON_HTML = "comparison.csv", "comparison.html"
FIT_CSV, FIT_JSON, FIT_HTML = "fit.csv", "fit.json", "fit.html"
RANKS_CSV = "ranks.csv"
MARKER = ".gradmem-report"   # in every folder gradmem wrote: what it may replace without --force


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w"):
    """Open a temporary file beside ``path``; it replaces ``path`` when the block ends
    without an error, and is removed when it raises."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as out:
            yield out
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_atomic(path: str | os.PathLike, data: str | bytes) -> Path:
    """``data`` into ``path``, atomically (bytes for binary formats, text as UTF-8)."""
    with atomic_open(path, "wb" if isinstance(data, bytes) else "w") as out:
        out.write(data)
    return Path(path)
