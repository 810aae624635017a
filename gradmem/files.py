"""Writing files so that a reader never sees half of one: write beside, then rename."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path


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
