"""Storages first met mid-run that were born during it, by code the hooks do not see.

A storage the capture first meets as an op's *input* is taken to have existed before the
capture (``preexisting``): it is counted from step 0. That is wrong for memory made during
the run where no dispatch mode looks: inside a kernel (gloo's reduce-scatter allocates
its own copy of the input), or inside a tensor subclass's dispatch. Counted from step 0,
such a storage inflates every step before it, and the allocator's ground truth with it
(it adds the storages alive before the capture, which it could not see allocated).

The allocator's record settles it: when a block of the same address and size was
allocated during the capture, before the storage was first met, and not freed in
between, the storage was born then. It is moved to the step whose op was running when the
block was allocated, and its ``op`` says it was made inside that op.
"""
from __future__ import annotations

import pandas as pd

from .storages import PYTHON_NUMBER, wrapped_scalars
from .tables import each_row, pairs


def late_births(tables: dict) -> dict:
    """``tables`` with such storages' ``alloc`` rows moved to their real birth."""
    alloc, ev = tables["alloc"], tables["allocator"]
    ev = ev[(ev["step"] >= 0) & ev["ptr"].notna()]
    first = alloc.drop_duplicates("storage")
    pre = first[first["preexisting"].astype(bool) & first["ptr"].notna() & (first["nbytes"] > 0)]
    if not len(ev) or not len(pre):
        return tables
    born = _blocks_before(pre, ev)
    if not len(born):
        return tables
    op_of = pairs(tables["step"]["step"], tables["step"]["op"])
    seq_at = _seq_at(tables)
    alloc = alloc.copy()
    numbers = wrapped_scalars(tables)   # born between ops (the argument parser), inside none
    for sid, step, t in each_row(born, "storage", "block_step", "block_t"):
        rows = alloc.index[alloc["storage"] == sid]
        op = PYTHON_NUMBER if int(sid) in numbers else f"(inside {op_of.get(int(step), '?')})"
        alloc.loc[rows, ["preexisting", "step", "seq", "op"]] = [
            False, int(step), seq_at(int(t), int(alloc.loc[rows[0], "seq"])), op]
    return {**tables, "alloc": alloc}


HOOK_KINDS = ("step", "alloc", "free", "saved", "unpacked", "released", "node_end", "grad", "leaf_grad", "collective")


def _seq_at(tables: dict):
    """t_ns -> the sequence number of the last hook event at or before it, so a storage
    born inside an op sits among the hooks' events where the allocator says it was born."""
    parts = [tables[k][["t_ns", "seq"]] for k in HOOK_KINDS if len(tables[k])]
    both = pd.concat(parts).sort_values("t_ns", kind="stable")
    times, seqs = both["t_ns"].to_numpy("int64"), both["seq"].cummax().to_numpy("int64")

    def seq_at(t: int, default: int) -> int:
        i = int(times.searchsorted(t, side="right")) - 1
        return int(seqs[i]) if i >= 0 else default
    return seq_at


def _blocks_before(pre: pd.DataFrame, ev: pd.DataFrame) -> pd.DataFrame:
    """For each storage, the last allocator event at its address before it was met: an
    allocation of its size means it was born then."""
    st = pd.DataFrame({"storage": pre["storage"].astype("int64"), "ptr": pre["ptr"].astype("int64"),
                       "size": pre["nbytes"].astype("int64"), "t": pre["t_ns"].astype("int64")}).sort_values("t")
    e = pd.DataFrame({"ptr": ev["ptr"].astype("int64"), "t": ev["t_ns"].astype("int64"),
                      "delta": ev["nbytes"].astype("int64"), "block_step": ev["step"].astype("int64")}).sort_values("t")
    e["block_t"] = e["t"]
    m = pd.merge_asof(st, e, on="t", by="ptr", direction="backward")
    return m[(m["delta"] == m["size"])]
