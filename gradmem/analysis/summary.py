"""The headline numbers: the peak, when it happened, and what was live then, by role.

``Summary`` is typed (one field per key of summary.json, in the file's order) and still
reads like the dict it replaced (``summary["peak_bytes"]``, ``summary.get("rss")``), because
``Capture.summary`` is documented that way and summary.json is written from it key for key.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

import pandas as pd

from ..roles import ROLE_ORDER
from ..trace import Trace
from . import cuda_allocator
from .tables import pairs
from .timeline import live_at

TOP_N = 10


@dataclass(frozen=True)
class Peak:
    """The highest running total of tracked bytes, and where it sits in the event log."""
    bytes: int
    seq: int        # the event right after which it was reached (-1: nothing was recorded)
    step: int
    op: str
    phase: str


@dataclass(frozen=True, eq=False)
class Summary(Mapping):
    """summary.json as a value. Field order is the file's key order (docs/reports.md)."""
    scenario: str
    params: dict
    device: str
    status: str
    error: dict | None
    notes: list
    torch_version: str
    gradmem_version: str
    peak_bytes: int
    peak_step: int
    peak_op: str
    peak_phase: str
    peak_by_role: dict
    live_at_peak: list
    peak_source: str                  # allocator (its record: kernel scratch included) | tracked
    tracked_peak_bytes: int           # the hooks' storages alone (the chart's timeline)
    tracked_peak_step: int
    tracked_peak_op: str
    tracked_peak_phase: str
    tracked_peak_by_role: dict
    unattributed_by_node: list        # kernel scratch by the op or node that took it
    backward_peak_bytes: int
    backward_peak_step: int
    bytes_by_role_at_end: dict
    modules_at_peak: list                # the modules whose own storages held the most at the peak
    activations_by_module: dict | None   # one training step's activations by module (None: no module ran)
    steps: int
    forward_steps: int
    backward_nodes: int
    backward_calls: int
    storages: int
    largest: list
    capture_engine: str
    engine_reason: str
    mode: str
    estimate: bool
    retain_grad: str
    cuda_allocator: dict | None
    allocator: dict
    rss: dict

    def __getitem__(self, key: str):
        if key not in _KEYS:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self):
        return iter(_KEYS)

    def __len__(self) -> int:
        return len(_KEYS)

    def as_dict(self) -> dict:
        """The plain dict summary.json is written from (nested values are not copied)."""
        return {k: getattr(self, k) for k in _KEYS}


_KEYS = tuple(f.name for f in fields(Summary))


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


def find_peak(d: pd.DataFrame, steps: pd.DataFrame, phase: str | None = None) -> Peak:
    """The peak of the timeline ``d`` (optionally within one phase), with its step's op and phase."""
    phase_of = pairs(steps["step"], steps["phase"])
    nbytes, seq, step = peak_of(d, phase_of, phase)
    return Peak(nbytes, seq, step, pairs(steps["step"], steps["op"]).get(step, ""), phase_of.get(step, ""))


def _peak_roles(tensors: pd.DataFrame, peak: Peak, allocator: bool) -> dict[str, int]:
    """Bytes by role at ``peak``; at the allocator's peak, the rest of it is ``unattributed``."""
    roles = _by_role(live_at(tensors, peak.seq))
    return {**roles, "unattributed": max(peak.bytes - sum(roles.values()), 0)} if allocator else roles


def summarize(trace: Trace, tensors: pd.DataFrame, steps: pd.DataFrame, peak: Peak, backward_peak: Peak,
              ground: dict, tracked: Peak | None = None, by_module: dict | None = None) -> Summary:
    """``peak`` is the true peak (the allocator's when its record is on, see headline.py),
    ``tracked`` the hooks' own (the same when there is no record). ``by_module``:
    ``modules_at_peak`` and ``activations_by_module`` (analysis/modules.py)."""
    tracked = tracked or peak
    by_allocator = bool(ground["allocator"].get("source"))
    by_module = by_module or {}
    at_peak = live_at(tensors, peak.seq)
    at_end = tensors[tensors["free_seq"].isna()]
    meta = trace.meta
    return Summary(
        scenario=meta.scenario, params=meta.params, device=meta.device,
        status=meta.status, error=meta.error, notes=list(meta.notes),
        torch_version=meta.torch_version, gradmem_version=meta.gradmem_version,
        peak_bytes=peak.bytes, peak_step=peak.step, peak_op=peak.op,
        peak_phase=peak.phase, peak_by_role=_peak_roles(tensors, peak, by_allocator),
        live_at_peak=_top(at_peak),
        peak_source="allocator" if by_allocator else "tracked",
        tracked_peak_bytes=tracked.bytes, tracked_peak_step=tracked.step, tracked_peak_op=tracked.op,
        tracked_peak_phase=tracked.phase, tracked_peak_by_role=_by_role(live_at(tensors, tracked.seq)),
        unattributed_by_node=list(ground["allocator"].get("unattributed_by_node", [])),
        backward_peak_bytes=backward_peak.bytes, backward_peak_step=backward_peak.step,
        bytes_by_role_at_end=_by_role(at_end),
        modules_at_peak=by_module.get("modules_at_peak", []),
        activations_by_module=by_module.get("activations_by_module"),
        steps=int(steps["step"].max()) if len(steps) else 0,
        forward_steps=int((steps["phase"] == "forward").sum()),
        backward_nodes=int(steps["node"].notna().sum()),
        backward_calls=int(steps["backward"].dropna().nunique()),
        storages=int(len(tensors)),
        largest=_top(tensors),
        capture_engine=meta.capture_engine, engine_reason=meta.engine_reason,
        mode=meta.mode, estimate=meta.mode == "fake", retain_grad=meta.retain_grad,
        cuda_allocator=cuda_allocator.estimate(tensors),
        allocator=ground["allocator"], rss=ground["rss"],
    )
