"""Roles a multi-process run adds (see ``roles.py``): communication buffers, and FSDP2's
sharded and unsharded parameters and gradients. A pass run after the single-process
role passes; it reads only facts the capture recorded:

- ``collective`` events name every storage a c10d collective read or wrote: those are
  ``comm_buffer`` (DDP's buckets, the ``.grad`` that is a view of a bucket with
  ``gradient_as_bucket_view=True``, broadcast and all-gather buffers). The storage is one
  row, so a bucket and the grads viewing it are counted once. The gradient AccumulateGrad
  hands over, which DDP copies into such a bucket and frees within the backward, is a
  ``gradient`` in passing, not a ``.grad`` kept.
- ``wrapped`` events say a storage is the local shard inside a DTensor: a shard the
  program names as a module's parameter is a ``sharded_param``; a shard named
  ``<param>.grad`` is a ``sharded_grad`` (FSDP2 sets it after the reduce-scatter, whose
  output it views).
- A forward op's output that a library then wraps as a leaf (FSDP2 passes a layer's inputs
  through an autograd Function that makes them leaves requiring grad) is not a parameter:
  it keeps the role of what the op made.
- ``lineage`` links the generations of a storage resized in place: a parameter whose
  storage FSDP2 frees (a ``free`` with ``resized``) or re-allocates by ``resize_`` is an
  ``unsharded_param`` in every generation, and a ``.grad`` of one is an ``unsharded_grad``.
"""
from __future__ import annotations

import pandas as pd

from .tables import each_row, known, pairs

from ..roles import Role

KEEP = {Role.PARAMETER.value, Role.OPTIMIZER_STATE.value, Role.BUFFER.value}


def collective_storages(tables: dict) -> dict[int, str]:
    """{storage id: the collectives that touched it, e.g. "allreduce_"}."""
    out: dict[int, list] = {}
    for op, sids in each_row(tables["collective"], "op", "storages"):
        for sid in sids or ():
            ops = out.setdefault(int(sid), [])
            if op not in ops:
                ops.append(op)
    return {k: ";".join(v) for k, v in out.items()}


def set_rank_roles(t: pd.DataFrame, tables: dict) -> pd.DataFrame:
    comm = collective_storages(tables)
    t["collective"] = [comm.get(i, "") for i in t["id"].tolist()]
    touched = (t["collective"] != "") & ~t["role"].isin(KEEP)
    t.loc[touched, "role"] = Role.COMM_BUFFER.value
    t = _copied_into_buckets(t, tables)
    t = _made_then_leaf(t, tables)
    t = _unsharded(t, tables)
    return _sharded(t, tables)


def _copied_into_buckets(t: pd.DataFrame, tables: dict) -> pd.DataFrame:
    """With ``gradient_as_bucket_view=True`` a parameter's ``.grad`` is a view of a bucket;
    the gradient AccumulateGrad hands over is copied into it and freed within the same
    backward: that one is a ``gradient`` in passing, not a ``.grad`` kept."""
    names = tables["name"]
    views = set(names.loc[names["source"] == "grad", "storage"].astype(int))
    if not (t["id"].isin(views) & (t["role"] == Role.COMM_BUFFER.value)).any():
        return t
    phase = pairs(tables["step"]["step"], tables["step"]["phase"])
    in_backward = t["free_step"].map(lambda s: known(s) and phase.get(int(s)) == "backward")
    passing = (t["role"] == Role.PARAM_GRAD.value) & in_backward
    t.loc[passing.astype(bool), "role"] = Role.GRADIENT.value
    return t


def _made_then_leaf(t: pd.DataFrame, tables: dict) -> pd.DataFrame:
    facts = tables["tensor"]
    made = set(facts.loc[facts["leaf"] == False, "storage"].astype(int))  # noqa: E712
    wrong = (t["role"] == Role.PARAMETER.value) & t["id"].isin(made) & (t["phase"] == "forward")
    t.loc[wrong, "_leaf_param"] = False
    t.loc[wrong, "role"] = [Role.ACTIVATION.value if s else Role.INTERMEDIATE.value for s in t.loc[wrong, "saved_by"]]
    return t


def _unsharded(t: pd.DataFrame, tables: dict) -> pd.DataFrame:
    alloc = tables["alloc"].drop_duplicates("storage")
    lineage = pairs(alloc["storage"].astype(int), alloc["lineage"])
    line = t["id"].map(lambda i: lineage.get(i) if known(lineage.get(i)) else i).astype("int64")
    free = tables["free"]
    shrunk = set(free.loc[free["resized"] == True, "storage"].astype(int))  # noqa: E712
    resized = set(line[(line != t["id"]) | t["id"].isin(shrunk)])
    params = set(line[t["_leaf_param"]])
    unsharded = line.isin(resized & params)
    t.loc[unsharded, "role"] = Role.UNSHARDED_PARAM.value
    targets = set(t.loc[unsharded, "id"])
    t.loc[t["grad_of"].isin(targets).fillna(False).astype(bool), "role"] = Role.UNSHARDED_GRAD.value
    return t


def _sharded(t: pd.DataFrame, tables: dict) -> pd.DataFrame:
    shards, names = set(tables["wrapped"]["storage"].astype(int)), tables["name"]
    named = lambda source: set(names.loc[names["source"] == source, "storage"].astype(int)) & shards  # noqa: E731
    params = named("parameter") | set(tables["wrapped"].loc[tables["wrapped"]["requires_grad"] == True, "storage"].astype(int))  # noqa: E712
    t.loc[t["id"].isin(params), "role"] = Role.SHARDED_PARAM.value
    t.loc[t["id"].isin(named("grad") - params), "role"] = Role.SHARDED_GRAD.value
    return t
