"""What each step did, and the per-backward-node table: what backward needs, and when."""
from __future__ import annotations

import pandas as pd

from .frames import text


def _names_by_step(frame: pd.DataFrame, names: dict[int, str], key: str = "storage") -> pd.Series:
    if not len(frame):
        return pd.Series(dtype=object)
    by_step: dict = {}   # plain dicts: a groupby with a Python lambda is slow on big traces
    for step, s in zip(frame["step"], frame[key]):
        labels = by_step.setdefault(step, [])
        if pd.notna(s):
            labels.append(names.get(int(s), f"S{int(s)}"))
    return pd.Series({step: ";".join(labels) for step, labels in by_step.items()}, dtype=object)


def annotate_steps(steps: pd.DataFrame, frames: dict, tensors: pd.DataFrame) -> pd.DataFrame:
    names = dict(zip(tensors["id"], tensors["name"]))
    storage_of = dict(zip(frames["saved"]["pack"], frames["saved"]["storage"]))
    alloc = frames["alloc"][~frames["alloc"]["preexisting"].astype(bool)]
    cols = {
        "allocated": _names_by_step(alloc, names),
        "freed": _names_by_step(frames["free"], names),
        "saved": _names_by_step(frames["saved"], names),
        "unpacked": _names_by_step(frames["unpacked"].assign(storage=lambda d: d["pack"].map(storage_of)), names),
        "released": _names_by_step(frames["released"].assign(storage=lambda d: d["pack"].map(storage_of)), names),
    }
    out = steps.copy()
    for col, series in cols.items():
        out[col] = text(out["step"].map(series))
    return out


NODE_COLUMNS = [
    "step", "node", "name", "backward", "unpacked", "unpacked_bytes", "unpacked_made_by",
    "grads_in", "grads_out", "allocated", "freed", "released", "live_before", "live_after",
    "peak_bytes", "duration_ns",
]


def nodes_table(steps: pd.DataFrame, frames: dict, tensors: pd.DataFrame) -> pd.DataFrame:
    """One row per backward node run, in execution order."""
    names = dict(zip(tensors["id"], tensors["name"]))
    nbytes = dict(zip(tensors["id"], tensors["nbytes"]))
    made_by = dict(zip(tensors["id"], tensors["created_by"]))
    storage_of = dict(zip(frames["saved"]["pack"], frames["saved"]["storage"]))
    unpacked = frames["unpacked"].assign(storage=lambda d: d["pack"].map(storage_of)).dropna(subset=["node"])
    used = {int(n): list(dict.fromkeys(int(s) for s in g["storage"].dropna())) for n, g in unpacked.groupby("node")}
    last = frames["node_end"].drop_duplicates("node", keep="last")
    ends = {int(n): (gi, go) for n, gi, go in zip(last["node"], last["grads_in"], last["grads_out"])}
    label = lambda ids: ";".join(names.get(int(i), f"S{int(i)}") for i in ids if i is not None)  # noqa: E731
    rows, before = [], steps["live_bytes"].shift(1).fillna(0).astype("int64")
    t_next = steps["t_ns"].shift(-1)
    for i, row in zip(steps.index[steps["node"].notna()], steps[steps["node"].notna()].to_dict("records")):
        nid = int(row["node"])
        storages = used.get(nid, [])
        end = dict(zip(("grads_in", "grads_out"), ends[nid])) if nid in ends else None
        rows.append({
            "step": row["step"], "node": nid, "name": row["op"], "backward": row["backward"],
            "unpacked": label(storages), "unpacked_bytes": sum(nbytes.get(s, 0) for s in set(storages)),
            "unpacked_made_by": ";".join(str(made_by.get(s, "")) for s in storages),
            "grads_in": label(end["grads_in"]) if end is not None else "",
            "grads_out": label(end["grads_out"]) if end is not None else "",
            "allocated": row["allocated"], "freed": row["freed"], "released": row["released"],
            "live_before": before[i], "live_after": row["live_bytes"], "peak_bytes": row["peak_bytes"],
            "duration_ns": (t_next[i] - row["t_ns"]) if pd.notna(t_next[i]) else pd.NA,
        })
    return pd.DataFrame(rows, columns=NODE_COLUMNS)
