"""Facts for ``gradmem fit``: the peak of one fake run, and the curve through many.

A search runs the scenario a few dozen times; each run needs only its peak, the bytes by
role at that peak and, for CUDA storages, what the caching allocator would reserve. So
``peak_point`` runs the first passes of ``analyze`` (storages with their roles, the running
total) and stops there: the per-node tables, the reconciliation with an allocator record
(a fake run has none) and the plain answer are not needed to compare a peak with a budget.

``fit_curve`` fits ``peak = a + b*v`` and ``peak = a + b*v + c*v**2`` to the measured
points within ``SPAN`` times of the largest value (where the growth shows, not the
constant scraps of tiny sizes), each weighted by 1/peak so that small values count as much,
and keeps the simpler curve unless the quadratic one is clearly closer. A curve is only
reported when it passes within ``TOLERANCE`` of every point: the peak of a real program is
piecewise (the moment of the peak can move to another op as the value grows), and a line
drawn through points it misses would be a claim the measurements do not make.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ..roles import ROLE_ORDER
from ..trace import Trace
from . import cuda_allocator
from .tables import by_kind, pairs
from .naming import node_names, storage_names
from .slots import build_slots
from .storages import tensors_table
from .summary import find_peak
from .timeline import deltas, live_at, steps_frame

TOLERANCE = 0.02          # a curve must pass within 2 % of every measured peak
QUADRATIC_GAIN = 0.5      # ... and the quadratic one must halve the linear one's worst miss
LINEAR_ENOUGH = 1e-3       # a line this close to every point is the answer, whatever a parabola does
SPAN = 64                 # fitted to the values within 64x of the largest: small values are
                          # dominated by constant scraps (a scalar's storage, rounding)


@dataclass(frozen=True)
class Point:
    """One fake run of the search."""
    value: int
    peak_bytes: int                 # the number compared with the budget (see ``measure``)
    fits: bool
    tensor_peak_bytes: int          # the exact peak of tracked storage bytes
    by_role: dict                   # bytes by role at the tensor peak
    reserved_peak_bytes: int | None = None    # CUDA: the caching allocator model's peaks
    allocated_peak_bytes: int | None = None
    peak_op: str = ""
    peak_phase: str = ""
    seconds: float = 0.0
    calibration_bytes: int = 0      # --calibrate: added to the tensor peak (see gradmem/fit.py)


@dataclass(frozen=True)
class Curve:
    """``peak ~ sum(coefs[i] * value**i)``, within ``max_error`` (relative) of every point."""
    kind: str                       # "linear" or "quadratic"
    coefs: tuple                    # (a, b) or (a, b, c)
    max_error: float
    fitted_from: int = 1            # the smallest value the curve was fitted to

    def __call__(self, value: float) -> float:
        return float(sum(c * value ** i for i, c in enumerate(self.coefs)))

    def text(self, name: str) -> str:
        a, b = self.coefs[0], self.coefs[1]
        out = f"{a:,.0f} B + {b:,.1f} B x {name}"
        if self.kind == "quadratic":
            out += f" + {self.coefs[2]:,.3f} B x {name}^2"
        return out


@dataclass
class PeakFacts:
    tensor_peak_bytes: int
    by_role: dict
    peak_op: str
    peak_phase: str
    cuda: dict | None = field(default=None)


def peak_facts(trace: Trace) -> PeakFacts:
    """The peak of a trace, its bytes by role, and the CUDA allocator model's peaks."""
    tables = by_kind(trace)
    snames = storage_names(tables)
    nnames = node_names(tables["node"], snames)
    slots = build_slots(tables, nnames)
    steps = steps_frame(tables, nnames)
    phase = steps.set_index("step")["phase"]
    tensors = tensors_table(tables, phase, pairs(steps["step"], steps["op"]), nnames, snames, slots)
    peak = find_peak(deltas(tensors), steps)
    at = live_at(tensors, peak.seq).groupby("role")["nbytes"].sum()
    by_role = {r: int(at.get(r, 0)) for r in ROLE_ORDER if r != "unattributed"}
    return PeakFacts(peak.bytes, by_role, peak.op, str(peak.phase), cuda_allocator.estimate(tensors))


def point(value: int, facts: PeakFacts, budget: int, measure: str, seconds: float = 0.0) -> Point:
    """The run at ``value`` as a search point; ``measure`` is "allocated" (the tensor peak)
    or "reserved" (the CUDA caching allocator model's reserved peak)."""
    cuda = facts.cuda or {}
    compared = cuda.get("reserved_peak_bytes", facts.tensor_peak_bytes) if measure == "reserved" else facts.tensor_peak_bytes
    return Point(value, int(compared), int(compared) <= budget, facts.tensor_peak_bytes, facts.by_role,
                 cuda.get("reserved_peak_bytes"), cuda.get("allocated_peak_bytes"), facts.peak_op,
                 facts.peak_phase, seconds)


def fit_curve(points: list[Point]) -> Curve | None:
    """The simplest of linear or quadratic that passes near every point, or None."""
    pts = {p.value: p.peak_bytes for p in points}
    top = max(pts, default=0)
    upper = {k: b for k, b in pts.items() if k >= top / SPAN}
    pts = upper if len(upper) >= 3 else pts
    if len(pts) < 3:
        return None
    v = np.array(sorted(pts), dtype=float)
    y = np.array([pts[k] for k in sorted(pts)], dtype=float)
    curves = [c for c in (_least_squares(v, y, 1), _least_squares(v, y, 2)) if c is not None]
    if not curves:
        return None
    curves = [replace(c, fitted_from=int(v.min())) for c in curves]
    best = curves[0]
    if len(curves) == 2 and len(v) >= 4 and best.max_error > LINEAR_ENOUGH and curves[1].max_error < best.max_error * QUADRATIC_GAIN:
        best = curves[1]
    return best if best.max_error <= TOLERANCE else None


def _least_squares(v: np.ndarray, y: np.ndarray, degree: int) -> Curve | None:
    if np.any(y <= 0):
        return None
    scale = v.max()
    x = v / scale                                  # well-conditioned columns
    basis = np.vander(x, degree + 1, increasing=True)
    w = 1.0 / y
    coefs, *_ = np.linalg.lstsq(basis * w[:, None], y * w, rcond=None)
    fitted = basis @ coefs
    error = float(np.max(np.abs(fitted - y) / y))
    real = tuple(float(c) / scale ** i for i, c in enumerate(coefs))
    return Curve("linear" if degree == 1 else "quadratic", real, error)


FIXED_ROLES = ("parameter", "param_grad", "optimizer_state", "buffer", "comm_buffer", "sharded_param",
               "unsharded_param", "sharded_grad", "unsharded_grad")


def fixed_bytes(p: Point) -> dict:
    """Bytes at the peak of the smallest run that do not scale with the value: the model's
    parameters, their gradients, optimizer state, buffers, communication buckets and
    sharded / gathered parameters and gradients (by role)."""
    return {r: p.by_role.get(r, 0) for r in FIXED_ROLES if p.by_role.get(r, 0)}
