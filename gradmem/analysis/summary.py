"""The headline numbers: the peak, when it happened, and what was live then, by role."""
from __future__ import annotations

import pandas as pd

from ..roles import ROLE_ORDER
from ..trace import Trace
from . import cuda_allocator
from .frames import pairs
from .timeline import live_at

TOP_N = 10


def _by_role(frame: pd.DataFrame) -> dict[str, int]:
    sums = frame.groupby("role")["nbytes"].sum()
    return {r: int(sums.get(r, 0)) for r in ROLE_ORDER if r != "unattributed"}


def _top(frame: pd.DataFrame, n: int = TOP_N) -> list[dict]:
    top = frame.sort_values(["nbytes", "id"], ascending=[False, True]).head(n)
    return [{"id": int(r.id), "name": r.name, "role": r.role, "nbytes": int(r.nbytes), "shape": r.shape,
             "saved_by": r.saved_by} for r in top.itertuples()]


def peak_of(d: pd.DataFrame, phase_of_step: dict, phase: str | None = None) -> tuple[int, int, int]:
    """(bytes, seq, step) of the highest running total, optionally within one phase."""
    if phase is not None:
        d = d[d["step"].map(phase_of_step) == phase]
    if not len(d):
        return 0, -1, 0
    i = d["live"].idxmax()
    return int(d.at[i, "live"]), int(d.at[i, "seq"]), int(d.at[i, "step"])


def summarize(trace: Trace, tensors: pd.DataFrame, steps: pd.DataFrame, d: pd.DataFrame) -> dict:
    phase_of = pairs(steps["step"], steps["phase"])
    op_of = pairs(steps["step"], steps["op"])
    peak, peak_seq, peak_step = peak_of(d, phase_of)
    bw_peak, _, bw_step = peak_of(d, phase_of, "backward")
    at_peak = live_at(tensors, peak_seq)
    at_end = tensors[tensors["free_seq"].isna()]
    meta = trace.meta
    return {
        "scenario": meta.scenario, "params": meta.params, "device": meta.device,
        "status": meta.status, "error": meta.error, "notes": list(meta.notes),
        "torch_version": meta.torch_version, "gradmem_version": meta.gradmem_version,
        "peak_bytes": peak, "peak_step": peak_step, "peak_op": op_of.get(peak_step, ""),
        "peak_phase": phase_of.get(peak_step, ""), "peak_by_role": _by_role(at_peak),
        "live_at_peak": _top(at_peak),
        "backward_peak_bytes": bw_peak, "backward_peak_step": bw_step,
        "bytes_by_role_at_end": _by_role(at_end),
        "steps": int(steps["step"].max()) if len(steps) else 0,
        "forward_steps": int((steps["phase"] == "forward").sum()),
        "backward_nodes": int(steps["node"].notna().sum()),
        "backward_calls": int(steps["backward"].dropna().nunique()),
        "storages": int(len(tensors)),
        "largest": _top(tensors),
        "capture_engine": meta.capture_engine, "engine_reason": meta.engine_reason,
        "mode": meta.mode, "estimate": meta.mode == "fake", "retain_grad": meta.retain_grad,
        "cuda_allocator": cuda_allocator.estimate(tensors),
    }
