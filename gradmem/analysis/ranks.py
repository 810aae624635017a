"""The merge of a multi-process run: one analysis per rank, aligned on a logical clock.

Ranks do not share a clock (nor, across hosts, a machine), but every rank calls the same
collectives in the same order (that is what makes a collective work) and runs the same
training steps. So the clock is logical: the *anchors* of a rank are its collectives
and the begin and end of each backward call, in the order it met them; a step sits at
``x = k + i / n``, where ``k`` anchors came before or inside it and it is the ``i``-th of
the ``n`` steps between anchor ``k`` and the next. Anchor ``k`` is at the same ``x`` on
every rank, whatever their speeds.

The median rank is a real rank: the one with the lower-middle peak (the middle one when
the number of ranks is odd), so that "rank 1 differs from the median" can name what
rank 1 holds and the median rank does not. The envelope's median is the true median
of the ranks' bytes at each point. Imports no torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..roles import ROLE_ORDER
from ..trace import Trace
from . import Analysis, analyze
from .timeline import live_at
from .tables import each_row

ROLES = [r for r in ROLE_ORDER if r != "unattributed"]
MAX_LANE_POINTS = 2000
ENVELOPE_POINTS = 1500
WHY_STORAGES = 3


@dataclass
class RankMerge:
    world_size: int
    scenario: str
    ranks: pd.DataFrame                    # one row per rank, missing ones included (RANK_COLUMNS)
    lanes: dict[int, pd.DataFrame]         # rank -> x, step, op, phase, peak_bytes, live_bytes
    envelope: pd.DataFrame                 # x, min, median, max (bytes)
    anchors: list[str]                     # label of anchor k (the longest rank's)
    worst: int | None
    least_headroom: int | None
    median_rank: int | None
    why: dict | None                       # why the worst rank differs from the median rank (why_differs)
    notes: list[str]
    analyses: dict[int, Analysis] = field(repr=False)


RANK_COLUMNS = (["rank", "status", "host", "local_rank", "device", "backend", "peak_bytes", "peak_source",
                 "tracked_peak_bytes", "allocator_peak_bytes", "peak_step", "peak_op", "peak_phase", "peak_x",
                 "capacity_bytes", "headroom_bytes"]
                + [f"peak_{r}" for r in ROLES + ["unattributed"]] + [f"diff_{r}" for r in ROLES + ["unattributed"]])


# -- the logical clock ------------------------------------------------------------------------
def anchors(a: Analysis) -> pd.DataFrame:
    """(step, label) of every collective and backward begin/end, in event order."""
    f = a.tables
    parts = [
        pd.DataFrame({"seq": f["collective"]["seq"], "step": f["collective"]["step"],
                      "label": [f"{op} #{int(i) + 1}" for op, i in each_row(f["collective"], "op", "index")]}),
        pd.DataFrame({"seq": f["backward_begin"]["seq"], "step": f["backward_begin"]["step"],
                      "label": [f"backward {int(i)} begins" for i in f["backward_begin"]["index"]]}),
        pd.DataFrame({"seq": f["backward_end"]["seq"], "step": f["backward_end"]["step"],
                      "label": [f"backward {int(i)} ends" for i in f["backward_end"]["index"]]}),
    ]
    out = pd.concat([p for p in parts if len(p)] or [parts[0]], ignore_index=True)
    return out.sort_values("seq", kind="stable").reset_index(drop=True)


def logical_x(steps: pd.DataFrame, anchor_steps: pd.Series) -> np.ndarray:
    """x of every step row (see the module docstring)."""
    step = steps["step"].to_numpy(dtype="int64")
    k = np.searchsorted(np.sort(anchor_steps.to_numpy(dtype="int64")), step, side="right")
    seg = pd.Series(k)
    i = seg.groupby(seg).cumcount().to_numpy()
    n = seg.map(seg.value_counts()).to_numpy()
    return k + i / n


def lane(a: Analysis, max_points: int = MAX_LANE_POINTS) -> pd.DataFrame:
    s = a.steps
    source = peak_step_of(a)[1]
    high = s["allocator_peak_bytes"].fillna(s["peak_bytes"]) if source == "allocator" else s["peak_bytes"]
    frame = pd.DataFrame({"x": logical_x(s, anchors(a)["step"]), "step": s["step"].to_numpy(), "op": s["op"].astype(str).to_numpy(),
                          "phase": s["phase"].astype(str).to_numpy(), "peak_bytes": high.to_numpy(dtype="int64"),
                          "live_bytes": s["live_bytes"].to_numpy()})
    if len(frame) <= max_points:
        return frame
    bucket = np.arange(len(frame)) * max_points // len(frame)
    keep = frame.groupby(bucket)["peak_bytes"].idxmax()   # each bucket's highest step: the peak survives
    return frame.loc[keep.to_numpy()].reset_index(drop=True)


def envelope(lanes: dict[int, pd.DataFrame], points: int = ENVELOPE_POINTS) -> pd.DataFrame:
    """min / median / max over the ranks that reached each x, on a common grid."""
    if not lanes:
        return pd.DataFrame(columns=["x", "min", "median", "max", "ranks"])
    end = max(float(l["x"].max()) for l in lanes.values())
    grid = np.linspace(0, end, points)
    values = []
    for l in lanes.values():
        x, y = l["x"].to_numpy(), l["peak_bytes"].to_numpy(dtype="float64")
        i = np.searchsorted(x, grid, side="right") - 1
        v = np.where(i >= 0, y[np.clip(i, 0, None)], np.nan)
        values.append(np.where(grid <= x.max(), v, np.nan))
    v = np.vstack(values)
    with np.errstate(all="ignore"):
        return pd.DataFrame({"x": grid, "min": np.nanmin(v, 0), "median": np.nanmedian(v, 0), "max": np.nanmax(v, 0),
                             "ranks": np.sum(~np.isnan(v), 0)})


# -- one row per rank -----------------------------------------------------------------------
def peak_step_of(a: Analysis) -> tuple[int, str]:
    """The rank's peak: the allocator's when it was recorded (what the process held,
    kernels' and collectives' own buffers included), else gradmem's tracked peak."""
    alloc = a.summary.get("allocator") or {}
    if alloc.get("source") and alloc.get("peak_bytes") is not None:
        return int(alloc["peak_step"]), "allocator"
    return int(a.summary["peak_step"]), "tracked"


def at_peak(a: Analysis, step: int | None = None) -> pd.DataFrame:
    """Storages alive at the highest tracked moment inside ``step`` (the rank's peak
    step by default), or after the last event before it when nothing happened in it."""
    step = peak_step_of(a)[0] if step is None else step
    d = a.timeline
    inside = d[d["step"] == step]
    if len(inside):
        seq = int(inside.at[inside["live"].idxmax(), "seq"])
    else:
        before = d[d["step"] < step]
        seq = int(before["seq"].iloc[-1]) if len(before) else -1
    return live_at(a.tensors, seq)


def rank_row(rank: int, a: Analysis, x_of_step: dict) -> dict:
    s, d = a.summary, a.trace.meta.distributed or {}
    alloc = s.get("allocator") or {}
    step, source = peak_step_of(a)
    row_of = a.steps.set_index("step")
    alive = at_peak(a, step)
    by_role = alive.groupby("role")["nbytes"].sum()
    peak = int(alloc["peak_bytes"]) if source == "allocator" else int(s["peak_bytes"])
    row = {"rank": rank, "status": s["status"], "host": d.get("host", ""), "local_rank": d.get("local_rank"),
           "device": s["device"], "backend": d.get("backend") or "", "peak_bytes": peak, "peak_source": source,
           "tracked_peak_bytes": s["peak_bytes"], "allocator_peak_bytes": alloc.get("peak_bytes"), "peak_step": step,
           "peak_op": row_of.at[step, "op"], "peak_phase": row_of.at[step, "phase"],
           "peak_x": round(float(x_of_step.get(step, 0.0)), 3), "capacity_bytes": d.get("capacity_bytes")}
    row.update({f"peak_{r}": int(by_role.get(r, 0)) for r in ROLES})
    row["peak_unattributed"] = max(0, peak - int(alive["nbytes"].sum())) if source == "allocator" else 0
    return row


def missing_row(rank: int, why: str) -> dict:
    return {"rank": rank, "status": why}


def headroom(ranks: pd.DataFrame) -> pd.Series:
    """Capacity left at the peak. A GPU is one rank's; a CPU host's memory is shared by
    its ranks, so their peaks are summed (as if they peaked together: the safe bound)."""
    peak = ranks["peak_bytes"]
    cpu = ranks["device"].astype(str).str.startswith("cpu")
    shared = peak.groupby(ranks["host"].where(cpu, ranks["rank"].astype(str))).transform("sum")
    return ranks["capacity_bytes"] - shared.where(cpu, peak)


def pick_median(ranks: pd.DataFrame) -> int | None:
    done = ranks[ranks["peak_bytes"].notna()].sort_values(["peak_bytes", "rank"])
    return None if not len(done) else int(done.iloc[(len(done) - 1) // 2]["rank"])


# -- why a rank differs -------------------------------------------------------------------------
def why_differs(k: int, m: int, analyses: dict, ranks: pd.DataFrame) -> dict:
    """How rank k's peak differs from the median rank m's: by role (largest difference
    first), and for each role the storages behind it, matched by name across the ranks."""
    rk, rm = ranks.set_index("rank").loc[k], ranks.set_index("rank").loc[m]
    pk, pm = at_peak(analyses[k]), at_peak(analyses[m])   # unattributed blocks have no names: no storages
    roles = []
    for r in ROLES + ["unattributed"]:
        diff = int(rk[f"peak_{r}"] - rm[f"peak_{r}"])
        if diff:
            roles.append({"role": r, "diff": diff, "bytes": int(rk[f"peak_{r}"]), "median_bytes": int(rm[f"peak_{r}"]),
                          "storages": _storages(pk, pm, r)})
    roles.sort(key=lambda d: -abs(d["diff"]))
    side = lambda row: {"peak_bytes": int(row["peak_bytes"]), "peak_step": int(row["peak_step"]),  # noqa: E731
                        "peak_op": row["peak_op"], "peak_phase": row["peak_phase"]}
    return {"rank": k, "median_rank": m, "gap": int(rk["peak_bytes"] - rm["peak_bytes"]),
            "at_rank": side(rk), "at_median": side(rm), "roles": roles}


def _storages(pk: pd.DataFrame, pm: pd.DataFrame, role: str) -> list[dict]:
    """The largest storages of ``role`` at rank k's peak whose bytes differ from the
    same-named storage at the median rank's peak (or that it does not hold)."""
    a, b = pk[pk["role"] == role], pm[pm["role"] == role]
    other = {n: (int(nb), sh) for n, nb, sh in each_row(b, "name", "nbytes", "shape")}
    rows = []
    for r in a.sort_values(["nbytes", "id"], ascending=[False, True]).itertuples():
        nb, shape = other.get(r.name, (0, None))
        if nb != r.nbytes:
            rows.append({"name": r.name, "shape": r.shape, "nbytes": int(r.nbytes), "median_shape": shape,
                         "median_nbytes": nb})
        if len(rows) == WHY_STORAGES:
            break
    return rows


# -- the recipe -------------------------------------------------------------------------------
def merge(traces: dict[int, Trace | None], world_size: int, missing: dict[int, str] | None = None) -> RankMerge:
    """``traces``: rank -> its trace (None when there is none); ``missing``: rank -> why."""
    missing = dict(missing or {})
    analyses = {r: analyze(t) for r, t in sorted(traces.items()) if t is not None}
    lanes, rows, labels = {}, [], []
    for r in range(world_size):
        if r not in analyses:
            rows.append(missing_row(r, missing.get(r, "missing")))
            continue
        a = analyses[r]
        an = anchors(a)
        lanes[r] = lane(a)
        labels = list(an["label"]) if len(an) > len(labels) else labels
        rows.append(rank_row(r, a, dict(zip(a.steps["step"].tolist(), logical_x(a.steps, an["step"])))))
    ranks = pd.DataFrame(rows).reindex(columns=RANK_COLUMNS)
    ranks["headroom_bytes"] = headroom(ranks)
    m = pick_median(ranks)
    done = ranks[ranks["peak_bytes"].notna()]
    worst = int(done.sort_values(["peak_bytes", "rank"], ascending=[False, True]).iloc[0]["rank"]) if len(done) else None
    room = done[done["headroom_bytes"].notna()]
    least = int(room.sort_values(["headroom_bytes", "peak_bytes"], ascending=[True, False]).iloc[0]["rank"]) if len(room) else None
    if m is not None:
        med = ranks.set_index("rank").loc[m]
        for r in ROLES + ["unattributed"]:
            ranks[f"diff_{r}"] = ranks[f"peak_{r}"] - med[f"peak_{r}"]
    why = why_differs(worst, m, analyses, ranks) if worst is not None and m is not None and worst != m else None
    scenario = next((a.summary["scenario"] for a in analyses.values()), "")
    return RankMerge(world_size, scenario, ranks, lanes, envelope(lanes), labels, worst, least, m, why,
                     merge_notes(ranks, analyses), analyses)


def merge_notes(ranks: pd.DataFrame, analyses: dict) -> list[str]:
    notes = []
    for r in ranks.itertuples():
        if r.status == "complete":
            continue
        if r.rank in analyses:
            err = analyses[r.rank].summary.get("error") or {}
            stop = f": {err.get('type')} at {err.get('file')}:{err.get('line')}: {err.get('message')}" if err else ""
            notes.append(f"rank {r.rank} is partial (it stopped before the scenario ended{stop}); "
                         "its lane ends where its record ends")
        else:
            notes.append(f"rank {r.rank}: no report ({r.status}); it is left out of the envelope and the median")
    return notes
