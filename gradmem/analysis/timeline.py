"""Steps and live bytes: the running total after every alloc and free, by role.

A step is a forward op, an engine op in backward, or one backward node. Step 0 stands for
"before the capture" and holds the storages that already existed.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .tables import each_row, known

from ..roles import ROLE_ORDER

AFTER_BACKWARD = "(after backward)"   # the step the capture begins when backward() returns


def steps_frame(tables: dict, node_name: dict[int, str]) -> pd.DataFrame:
    s = tables["step"]
    steps = pd.DataFrame({
        "step": s["step"].astype(int).values,
        "phase": s["phase"].values,
        "op": [node_name.get(int(n), op) if known(n) else op for n, op in each_row(s, "node", "op")],
        "node": s["node"].astype("Int64").values,
        "backward": s["backward"].astype("Int64").values,
        "t_ns": s["t_ns"].values,
    })
    first_grad = _first_forward_step(tables)
    steps.loc[(steps["phase"] == "forward") & (steps["step"] < first_grad), "phase"] = "setup"
    # the program's own code after backward() returned is neither forward nor backward
    steps.loc[steps["op"] == AFTER_BACKWARD, "phase"] = "after_backward"
    before = pd.DataFrame({"step": [0], "phase": ["setup"], "op": ["(before capture)"], "node": [pd.NA],
                           "backward": [pd.NA], "t_ns": [int(s["t_ns"].min()) if len(s) else 0]})
    return pd.concat([before, steps], ignore_index=True)


def _first_forward_step(tables: dict) -> int:
    """The first step that made a tensor from one that requires grad, or with a grad_fn:
    where the forward pass starts (also under no_grad, as reentrant checkpoint runs it)."""
    facts = tables["tensor"]
    nonleaf = set(facts.loc[facts["leaf"] == False, "storage"].dropna().astype(int))  # noqa: E712
    alloc = tables["alloc"]
    made = alloc.loc[alloc["storage"].isin(nonleaf) | (alloc["grad_args"] == True), "step"]  # noqa: E712
    return int(made.min()) if len(made) else np.iinfo(np.int64).max


def deltas(tensors: pd.DataFrame) -> pd.DataFrame:
    """+nbytes at each allocation, -nbytes at each free, in event order."""
    alloc = pd.DataFrame({"seq": tensors["alloc_seq"], "step": tensors["alloc_step"],
                          "role": tensors["role"], "delta": tensors["nbytes"]})
    freed = tensors[tensors["free_seq"].notna()]
    free = pd.DataFrame({"seq": freed["free_seq"].astype("int64"), "step": freed["free_step"].astype("int64"),
                         "role": freed["role"], "delta": -freed["nbytes"]})
    d = pd.concat([alloc, free], ignore_index=True).sort_values("seq", kind="stable")
    d["live"] = d["delta"].cumsum()
    return d.reset_index(drop=True)


def live_by_step(steps: pd.DataFrame, d: pd.DataFrame) -> pd.DataFrame:
    """live_bytes (after the step), peak_bytes (highest within it) and live_<role>."""
    idx = steps["step"]
    after = d.groupby("step")["live"].last().reindex(idx).ffill().fillna(0)
    start = after.shift(1).fillna(0)
    within = d.groupby("step")["live"].max().reindex(idx)
    out = steps.copy()
    out["live_bytes"] = after.astype("int64").values
    out["peak_bytes"] = np.fmax(within.values, np.maximum(start.values, after.values)).astype("int64")
    per_role = d.pivot_table(index="step", columns="role", values="delta", aggfunc="sum").reindex(idx).fillna(0).cumsum()
    for role in ROLE_ORDER:
        col = per_role[role] if role in per_role else 0
        out[f"live_{role}"] = np.asarray(col, dtype="int64") if not np.isscalar(col) else 0
    return out


def live_at(tensors: pd.DataFrame, seq: int) -> pd.DataFrame:
    """Storages alive just after event ``seq``."""
    alive = (tensors["alloc_seq"] <= seq) & (tensors["free_seq"].isna() | (tensors["free_seq"] > seq))
    return tensors[alive.fillna(False).astype(bool)]
