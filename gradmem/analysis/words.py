"""Plain words for where a tensor came from: ``torch.tensor(...) at line 19`` rather than
the aten op ``lift_fresh`` a learner never wrote."""
from __future__ import annotations

import os

import pandas as pd
from .tables import each_row

CALLS = {"lift_fresh": "torch.tensor(...)", "lift_fresh_copy": "torch.tensor(...)", "lift": "torch.tensor(...)"}


def made_at(tensors: pd.DataFrame, tables: dict) -> list[str]:
    """Per storage: the call in the program that made it and its line, where known; else the
    op. The line: the Python engine's, recorded with a torch.tensor(...)'s allocation; else
    (the native engine) the source line behind the op, for those calls too."""
    alloc = tables["alloc"].drop_duplicates("storage")
    lines = {int(s): ln for s, ln in each_row(alloc, "storage", "line") if isinstance(ln, (list, tuple))}
    sources = tensors["source"].tolist() if "source" in tensors else [""] * len(tensors)
    out = []
    for sid, op, source in zip(tensors["id"].astype(int).tolist(), tensors["created_by"].tolist(), sources):
        call = CALLS.get(op, op)
        where = lines.get(sid) or (_place(source) if op in CALLS else None)
        out.append(f"{call} at line {where[1]} of {os.path.basename(where[0])}" if where else call)
    return out


def _place(source: str) -> tuple | None:
    """("path", line) from a source cell ``path:line``."""
    path, sep, line = (source or "").rpartition(":")
    return (path, int(line)) if sep and line.isdigit() else None
