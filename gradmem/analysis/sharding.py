"""Roles a multi-process run adds (see ``roles.py``): communication buffers, and FSDP2's
sharded and unsharded parameters and gradients. A pass run after the single-process
role passes; it reads only facts the capture recorded:

- ``collective`` events name every storage a c10d collective read or wrote: those are
  ``comm_buffer`` (DDP's buckets, the ``.grad`` that is a view of a bucket with
  ``gradient_as_bucket_view=True``, broadcast and all-gather buffers). The storage is one
  row, so a bucket and the grads viewing it are counted once.
- ``wrapped`` events say a storage is the local shard inside a DTensor: a shard of a leaf
  that requires grad is a ``sharded_param``; a shard named ``<param>.grad`` is a
  ``sharded_grad`` (FSDP2 sets it after the reduce-scatter, whose output it views).
- ``lineage`` links the generations of a storage resized in place: a parameter whose
  storage FSDP2 frees and re-allocates by ``resize_`` is an ``unsharded_param`` in every
  generation, and a ``.grad`` of one is an ``unsharded_grad``.
"""
from __future__ import annotations

import pandas as pd

from ..roles import Role

KEEP = {Role.PARAMETER.value, Role.OPTIMIZER_STATE.value, Role.BUFFER.value}


def collective_storages(frames: dict) -> dict[int, str]:
    """{storage id: the collectives that touched it, e.g. "allreduce_"}."""
    out: dict[int, list] = {}
    for op, sids in zip(frames["collective"]["op"], frames["collective"]["storages"]):
        for sid in sids or ():
            ops = out.setdefault(int(sid), [])
            if op not in ops:
                ops.append(op)
    return {k: ";".join(v) for k, v in out.items()}


def set_rank_roles(t: pd.DataFrame, frames: dict) -> pd.DataFrame:
    comm = collective_storages(frames)
    t["collective"] = t["id"].map(comm).fillna("")
    touched = (t["collective"] != "") & ~t["role"].isin(KEEP)
    t.loc[touched, "role"] = Role.COMM_BUFFER.value
    t = _unsharded(t, frames)
    return _sharded(t, frames)


def _unsharded(t: pd.DataFrame, frames: dict) -> pd.DataFrame:
    alloc = frames["alloc"].drop_duplicates("storage")
    lineage = dict(zip(alloc["storage"].astype(int), alloc["lineage"]))
    line = t["id"].map(lambda i: lineage.get(i) if pd.notna(lineage.get(i)) else i).astype("int64")
    resized = line[line != t["id"]].unique()
    params = set(line[t["_leaf_param"]])
    unsharded = line.isin(set(resized) & params)
    t.loc[unsharded, "role"] = Role.UNSHARDED_PARAM.value
    targets = set(t.loc[unsharded, "id"])
    t.loc[t["grad_of"].isin(targets).fillna(False).astype(bool), "role"] = Role.UNSHARDED_GRAD.value
    return t


def _sharded(t: pd.DataFrame, frames: dict) -> pd.DataFrame:
    w = frames["wrapped"]
    shard_of_param = set(w.loc[(w["requires_grad"] == True) & (w["leaf"] == True), "storage"].astype(int))  # noqa: E712
    t.loc[t["id"].isin(shard_of_param), "role"] = Role.SHARDED_PARAM.value
    names = frames["name"]
    grads = set(names.loc[names["source"] == "grad", "storage"].astype(int)) & set(w["storage"].astype(int))
    t.loc[t["id"].isin(grads - shard_of_param), "role"] = Role.SHARDED_GRAD.value
    return t
