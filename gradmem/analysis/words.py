"""Plain words for where a tensor came from: ``torch.tensor(...) at line 19`` rather than
the aten op ``lift_fresh`` a learner never wrote."""
from __future__ import annotations

import os

import pandas as pd

CALLS = {"lift_fresh": "torch.tensor(...)", "lift_fresh_copy": "torch.tensor(...)", "lift": "torch.tensor(...)"}


def made_at(tensors: pd.DataFrame, tables: dict) -> list[str]:
    """Per storage: the call in the program that made it and its line, where known; else the op."""
    alloc = tables["alloc"].drop_duplicates("storage")
    lines = {int(s): ln for s, ln in zip(alloc["storage"], alloc["line"]) if isinstance(ln, (list, tuple))}
    out = []
    for sid, op in zip(tensors["id"].astype(int), tensors["created_by"]):
        call = CALLS.get(op, op)
        where = lines.get(sid)
        out.append(f"{call} at line {where[1]} of {os.path.basename(where[0])}" if where else call)
    return out
