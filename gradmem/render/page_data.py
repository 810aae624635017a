"""Everything report.html shows, as plain data: the page's writer only fills a template.

``page_data(analysis)`` returns a JSON-ready dict. Big traces stay small: the memory curve
is cut into at most ``MAX_POINTS`` buckets of consecutive steps, each keeping the exact
lowest and highest live bytes reached inside it (so the peak is never lost); storage,
lifetime, node and peak rows are capped, and the page says how many were left out.
Imports no torch.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..roles import ROLE_COLORS, ROLE_MEANINGS, ROLE_ORDER
from .answer import answer
from .derivation import forward_values, rule_rows
from .peak import peak_rows

MAX_POINTS = 4000        # memory-curve buckets
MAX_STORAGES = 2000      # storages the page knows by name (hover lists, lifetimes, highlights)
LIFETIME_ROWS = 200      # bars in the lifetime chart
NODE_ROWS = 1000         # rows of the "what backward needs" table
PEAK_ROWS = 500          # rows of the "at the peak" table
MODULE_ROWS = 2000       # rows of the module tree


def page_data(analysis) -> dict:
    tensors, steps = analysis.tensors, analysis.steps
    shown = chosen_storages(tensors)
    peak = analysis.peak
    return {
        "title": analysis.summary.scenario or "capture",
        "summary": _plain(analysis.summary),
        "roles": [{"role": r, "color": ROLE_COLORS[r], "meaning": ROLE_MEANINGS[r]} for r in used_roles(steps)],
        "memory": memory_series(steps, analysis.timeline),
        "phases": phase_ranges(steps),
        "peak": {"bytes": peak.bytes, "step": peak.step, "seq": peak.seq,
                 "t": step_times(steps).get(peak.step, 0.0), "op": peak.op},
        "storages": storage_rows(shown, analysis.slots),
        "storages_total": int(len(tensors)),
        "lifetime_ids": lifetime_ids(shown),
        "nodes": node_rows(analysis, set(shown["id"])),
        "nodes_total": int(len(analysis.nodes)),
        "at_peak": peak_rows(analysis, PEAK_ROWS),
        "answer": answer(analysis),
        "forward": forward_values(tensors),
        "rules": rule_rows(analysis),
        **module_data(analysis),
    }


MODULE_FIELDS = ["module", "type", "parent", "depth", "calls", "parameter_bytes", "activation_bytes",
                 "activation_bytes_total", "gradient_bytes", "peak_live_bytes", "peak_live_bytes_total",
                 "step_activation_bytes", "step_activation_bytes_total"]


def module_data(analysis) -> dict:
    """The module tree (modules.csv's rows, in model order; past `MODULE_ROWS`, the
    shallowest) and the modules holding the peak."""
    m = analysis.modules
    total = int(len(m))
    if total > MODULE_ROWS:
        m = m.sort_values(["depth"], kind="stable").head(MODULE_ROWS).sort_index()
    rows = [{k: _cell(r[k]) for k in MODULE_FIELDS} for r in m.to_dict("records")] if total else []
    d = analysis.answer_facts.described
    return {"modules": rows, "modules_total": total, "modules_at_peak": list(analysis.summary.modules_at_peak),
            "training_step": {"call": d.call, "calls": d.calls}}


def _plain(summary) -> dict:
    keep = ("scenario", "params", "device", "status", "error", "notes", "torch_version", "gradmem_version",
            "peak_bytes", "peak_step", "peak_op", "peak_phase", "steps", "backward_nodes", "storages",
            "estimate", "mode")
    return {k: summary.get(k) for k in keep}


def used_roles(steps: pd.DataFrame) -> list[str]:
    return [r for r in ROLE_ORDER if (steps[f"live_{r}"] != 0).any()]


def step_times(steps: pd.DataFrame) -> dict[int, float]:
    """{step: ms since the first step began}."""
    t = (steps["t_ns"] - steps["t_ns"].min()) / 1e6
    return {int(s): round(float(v), 4) for s, v in zip(steps["step"], t)}


# -- the memory curve -------------------------------------------------------------------------
def step_ranges(steps: pd.DataFrame, d: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Exact lowest and highest live bytes within each step (counting the level it began at)."""
    idx = steps["step"]
    start = steps["live_bytes"].shift(1).fillna(0).to_numpy()
    g = d.groupby("step")["live"]
    lo = g.min().reindex(idx).to_numpy(dtype=float)
    hi = g.max().reindex(idx).to_numpy(dtype=float)
    after = steps["live_bytes"].to_numpy()
    lo = np.fmin(lo, np.minimum(start, after))
    hi = np.fmax(hi, np.maximum(start, after))
    return lo.astype("int64"), hi.astype("int64")


def memory_series(steps: pd.DataFrame, d: pd.DataFrame, max_points: int = MAX_POINTS) -> dict:
    """Columnar buckets of consecutive steps: first/last step, start time (ms), live bytes by
    role after the bucket, and the exact min/max of the total inside it."""
    lo, hi = step_ranges(steps, d)
    size = max(1, math.ceil(len(steps) / max_points))
    b = pd.DataFrame({"bucket": np.arange(len(steps)) // size, "step": steps["step"].to_numpy(),
                      "t": (steps["t_ns"] - steps["t_ns"].min()).to_numpy() / 1e6, "lo": lo, "hi": hi})
    for role in used_roles(steps):
        b[role] = steps[f"live_{role}"].to_numpy()
    agg = {"step": ["first", "last"], "t": "first", "lo": "min", "hi": "max",
           **{r: "last" for r in used_roles(steps)}}
    g = b.groupby("bucket").agg(agg)
    t_end = float(b["t"].iloc[-1]) if len(b) else 0.0
    return {
        "bucket_steps": size,
        "x0": g[("step", "first")].astype(int).tolist(), "x1": g[("step", "last")].astype(int).tolist(),
        "t": [round(v, 4) for v in g[("t", "first")]], "t_end": round(t_end, 4),
        "lo": g[("lo", "min")].astype(int).tolist(), "hi": g[("hi", "max")].astype(int).tolist(),
        "by_role": {r: g[(r, "last")].astype(int).tolist() for r in used_roles(steps)},
        "op": [str(o) for o in steps["op"]] if size == 1 else [],
        "phase": [str(p) for p in steps["phase"]] if size == 1 else [],
    }


def phase_ranges(steps: pd.DataFrame) -> list[dict]:
    """Runs of consecutive steps in the same phase: [{phase, x0, x1, t0, t1}]."""
    if not len(steps):
        return []
    change = steps["phase"].ne(steps["phase"].shift()).cumsum()
    t = (steps["t_ns"] - steps["t_ns"].min()) / 1e6
    runs = steps.assign(run=change, t=t).groupby("run").agg(
        phase=("phase", "first"), x0=("step", "first"), x1=("step", "last"), t0=("t", "first"))
    t1 = list(runs["t0"].iloc[1:]) + [float(t.iloc[-1])]
    return [{"phase": p, "x0": int(a), "x1": int(b), "t0": round(float(c), 4), "t1": round(float(e), 4)}
            for p, a, b, c, e in zip(runs["phase"], runs["x0"], runs["x1"], runs["t0"], t1)]


# -- storages, lifetimes and nodes -----------------------------------------------------------
def chosen_storages(tensors: pd.DataFrame, limit: int = MAX_STORAGES) -> pd.DataFrame:
    """Every storage if few; else the saved ones and then the largest, in allocation order."""
    if len(tensors) <= limit:
        return tensors.sort_values("alloc_seq", kind="stable")
    rank = tensors.assign(_saved=tensors["saved_by"] != "")
    rank = rank.sort_values(["_saved", "nbytes", "alloc_seq"], ascending=[False, False, True])
    return tensors.loc[rank.index[:limit]].sort_values("alloc_seq", kind="stable")


def lifetime_ids(shown: pd.DataFrame, limit: int = LIFETIME_ROWS) -> list[int]:
    """The bars to draw: the largest storages, in allocation order so the story reads down."""
    top = shown.sort_values(["nbytes", "alloc_seq"], ascending=[False, True]).head(limit)
    return [int(i) for i in top.sort_values("alloc_seq", kind="stable")["id"]]


def storage_rows(shown: pd.DataFrame, slots) -> dict:
    """Columnar rows for the page: a/f are the alloc and free steps (f = -1: alive at the end)."""
    ids = [int(i) for i in shown["id"]]
    saved, unpacked, released = (slots.steps_by_storage(k, set(ids)) for k in ("saved", "unpacked", "released"))
    return {
        "id": ids, "name": [str(n) for n in shown["name"]], "role": list(shown["role"]),
        "bytes": [int(b) for b in shown["nbytes"]], "shape": list(shown["shape"]),
        "a": [int(a) for a in shown["alloc_step"]],
        "f": [int(f) if pd.notna(f) else -1 for f in shown["free_step"]],
        "saved_by": list(shown["saved_by"]),
        "module": [str(m) for m in shown["module"]], "source": [str(s) for s in shown["source"]],
        "saved": [saved.get(i, []) for i in ids], "unpacked": [unpacked.get(i, []) for i in ids],
        "released": [released.get(i, []) for i in ids],
    }


def _group(keys, values) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for k, v in zip(keys, values):
        if k is not None and not pd.isna(k):
            out.setdefault(int(k), []).append(int(v))
    return out


def node_storages(analysis, known: set) -> dict[str, dict[int, list[int]]]:
    """{step: ids} the storages each step allocated and freed, and {node: ids} each node
    unpacked, among the storages the page knows."""
    t = analysis.tensors[analysis.tensors["id"].isin(known)]
    unp = analysis.slots.unpacked
    unp = unp[unp["storage"].isin(known)]
    return {"produced": _group(t["alloc_step"], t["id"]), "freed": _group(t["free_step"], t["id"]),
            "unpacked": _group(unp["node"], unp["storage"])}


NODE_FIELDS = ["step", "name", "unpacked", "unpacked_bytes", "unpacked_made_by", "grads_in", "grads_out",
               "freed", "released", "live_before", "live_after", "peak_bytes", "module", "source"]


def node_rows(analysis, known: set, limit: int = NODE_ROWS) -> list[dict]:
    """The per-node table; past `limit` nodes, those with the highest peak, in execution order."""
    nodes = analysis.nodes
    if len(nodes) > limit:
        nodes = nodes.sort_values(["peak_bytes", "step"], ascending=[False, True]).head(limit).sort_values("step")
    rows, times, ids = [], step_times(analysis.steps), node_storages(analysis, known)
    for r in nodes.to_dict("records"):
        step, node = int(r["step"]), int(r["node"])
        row = {k: _cell(r[k]) for k in NODE_FIELDS}
        row["t"] = times.get(step, 0.0)
        row["unpacked_made_by"] = _cell(r["unpacked_made_at"])   # torch.tensor(...) at line N, not lift_fresh
        row["unpacked_ids"] = sorted(set(ids["unpacked"].get(node, [])))
        row["produced_ids"] = sorted(ids["produced"].get(step, []))
        row["freed_ids"] = sorted(ids["freed"].get(step, []))
        rows.append(row)
    return rows


def _cell(v):
    if v is None or (not isinstance(v, str) and pd.isna(v)):
        return ""
    return v.item() if hasattr(v, "item") else v
