"""The headline peak: the allocator's own when its record is on, the hooks' otherwise.

The hooks see every tensor an op returns, but not the buffers kernels allocate for
themselves (convolution backward's columns, an LSTM's gates): a model's true peak can be
tens of percent higher than the tracked one. So ``peak_bytes`` is the allocator's peak
(what the process really needed) with ``peak_step`` where it happened, and the tracked
peak stays beside it as ``tracked_peak_*``. ``peak_by_role`` at the true peak is what the
tracked storages held at the allocator's peak (at their highest in that step where the
moment cannot be matched), plus ``unattributed``: the rest of the allocator's peak, buffers
kernels took for themselves that no tensor explains. The two add up to ``peak_bytes``.
"""
from __future__ import annotations

import pandas as pd

from .summary import by_role, top
from .timeline import live_at

TRACKED = ("peak_bytes", "peak_seq", "peak_step", "peak_op", "peak_phase", "peak_by_role", "live_at_peak")


def headline(summary: dict, steps: pd.DataFrame, tensors: pd.DataFrame, d: pd.DataFrame) -> dict:
    out = dict(summary)
    for key in TRACKED:
        out["tracked_" + key] = summary[key]
    allocator = summary.get("allocator") or {}
    if not allocator.get("source"):
        out.update(peak_source="tracked", unattributed_by_node=[])
        return out
    step = int(allocator["peak_step"])
    phase = dict(zip(steps["step"], steps["phase"]))
    seq = _moment_in(d, step, int(allocator["peak_bytes"]) - int(allocator.get("unattributed_at_peak") or 0))
    at_peak = live_at(tensors, seq)
    roles = by_role(at_peak)
    out.update(
        peak_source="allocator", peak_bytes=int(allocator["peak_bytes"]), peak_seq=seq, peak_step=step,
        peak_op=allocator["peak_op"], peak_phase=phase.get(step, ""),
        peak_by_role={**roles, "unattributed": max(int(allocator["peak_bytes"]) - sum(roles.values()), 0)},
        live_at_peak=top(at_peak), unattributed_by_node=allocator.get("unattributed_by_node", []),
    )
    return out


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
