"""The headline peak: the allocator's own when its record is on, the hooks' otherwise.

The hooks see every tensor an op returns, but not the buffers kernels allocate for
themselves (convolution backward's columns, an LSTM's gates): a model's true peak can be
tens of percent higher than the tracked one. So the summary's ``peak_bytes`` is the
allocator's peak (what the process really needed) with ``peak_step`` where it happened,
and the tracked peak stays beside it as ``tracked_peak_*``. What was live at the true
peak is what the tracked storages held at the allocator's moment (at their highest in that
step where the moment cannot be matched), plus ``unattributed``: the rest of the
allocator's peak, buffers kernels took for themselves that no tensor explains. The two
add up to ``peak_bytes``.
"""
from __future__ import annotations

import pandas as pd

from .tables import pairs
from .summary import Peak


def true_peak(tracked: Peak, allocator: dict, steps: pd.DataFrame, d: pd.DataFrame) -> Peak:
    """The allocator's peak as a ``Peak`` (its ``seq``: the tracked storages' moment in that
    step); the tracked peak itself when there is no allocator record."""
    if not allocator.get("source"):
        return tracked
    step = int(allocator["peak_step"])
    seq = _moment_in(d, step, int(allocator["peak_bytes"]) - int(allocator.get("unattributed_at_peak") or 0))
    return Peak(int(allocator["peak_bytes"]), seq, step, pairs(steps["step"], steps["op"]).get(step, ""),
                pairs(steps["step"], steps["phase"]).get(step, ""))


def _moment_in(d: pd.DataFrame, step: int, tracked: int) -> int:
    """The event within ``step`` at which the tracked storages held ``tracked`` bytes, what
    they held at the allocator's peak (its peak less the scratch alive then); else the one
    at which they held the most (the last before the step when it made or freed nothing)."""
    inside = d[d["step"] == step]
    exact = inside[inside["live"] == tracked]
    if len(exact):
        return int(exact["seq"].iloc[-1])
    if len(inside):
        return int(inside.at[inside["live"].idxmax(), "seq"])
    before = d[d["step"] < step]
    return int(before["seq"].max()) if len(before) else -1


def unattributed_by_node(loose: pd.DataFrame, op_of: dict) -> list[dict]:
    """Kernel scratch by the op or backward node whose step allocated it: the most of it
    alive at once within one call (one step), and in how many calls it took any."""
    if not len(loose):
        return []
    made = pd.DataFrame({"step": loose["alloc_step"], "t": loose["alloc_t"], "d": loose["nbytes"]})
    inside = loose[loose["free_step"] == loose["alloc_step"]]
    given = pd.DataFrame({"step": inside["alloc_step"], "t": inside["free_t"], "d": -inside["nbytes"]})
    ev = pd.concat([made, given], ignore_index=True).sort_values(["step", "t", "d"], kind="stable")
    ev["held"] = ev.groupby("step")["d"].cumsum()
    per_step = ev.groupby("step")["held"].max()
    frame = pd.DataFrame({"op": [op_of.get(int(s), "") for s in per_step.index], "bytes": per_step.to_numpy()})
    grouped = frame.groupby("op")["bytes"].agg(["max", "count"]).sort_values(["max", "count"], ascending=False)
    return [{"op": op, "max_bytes": int(r["max"]), "calls": int(r["count"])} for op, r in grouped.iterrows()]
