"""The trace as compact text, one line per event that matters to the question:

    STEP 10 backward PowBackward0
    UNPACK S5 error in PowBackward0
    FREE S10 grad(error_squared) after PowBackward0

Used by golden tests and by anyone who wants to read a run top to bottom.
"""
from __future__ import annotations

import pandas as pd

from ..trace import Trace
from .slots import Slots
from .storages import OUTSIDE_GRAPH
from .tables import pairs


class _Labels:
    def __init__(self, tensors: pd.DataFrame, steps: pd.DataFrame, node_name: dict, owner: dict, storage_of: dict):
        self.tensors = tensors.set_index("id")
        self.step_op = pairs(steps["step"], steps["op"])
        self.step_phase = pairs(steps["step"], steps["phase"])
        self.node_name = node_name
        self.owner = owner
        self.storage_of = storage_of

    def s(self, sid) -> str:
        if sid is None or pd.isna(sid):
            return "-"
        sid = int(sid)
        return f"S{sid} {self.tensors.at[sid, 'name']}" if sid in self.tensors.index else f"S{sid}"

    def freed_after(self, sid) -> str:
        sid = int(sid)
        return str(self.tensors.at[sid, "freed_after"]) if sid in self.tensors.index else ""

    def full(self, sid) -> str:
        r = self.tensors.loc[int(sid)].to_dict()
        value = f" = {r['value']}" if isinstance(r["value"], str) else ""
        return f"{self.s(sid)} {r['shape']} {r['dtype']} {r['nbytes']} B [{r['role']}]{value}"


def _line(ev, lab: _Labels) -> str | None:
    d, k = ev.data, str(ev.kind)
    if k == "step":
        return f"STEP {ev.step} {lab.step_phase.get(ev.step, d['phase'])} {lab.node_name.get(d['node'], d['op']) if d.get('node') else d['op']}"
    if k == "alloc":
        extra = " (before capture)" if d.get("preexisting") else " (recomputed)" if d.get("recompute") else ""
        return f"ALLOC {lab.full(d['storage'])}{extra}"
    if k == "saved":
        return f"SAVED {lab.s(d['storage'])} by {lab.owner.get(d['pack'], OUTSIDE_GRAPH)}"
    if k == "unpacked":
        return f"UNPACK {lab.s(lab.storage_of.get(d['pack']))} in {lab.node_name.get(d.get('node'), '(outside backward)')}"
    if k == "released":
        return f"RELEASE {lab.s(lab.storage_of.get(d['pack']))} slot {lab.owner.get(d['pack'], '?')}"
    if k == "free":
        freed_after = lab.freed_after(d["storage"])
        if freed_after.endswith("() returned)"):
            return f"FREE {lab.s(d['storage'])} when {freed_after[1:-1]}"
        return f"FREE {lab.s(d['storage'])} after {lab.step_op.get(ev.step, ev.step)}"
    if k == "node_end":
        ins = ", ".join(lab.s(g) for g in d["grads_in"] if g is not None) or "-"
        outs = ", ".join(lab.s(g) for g in d["grads_out"] if g is not None) or "-"
        return f"NODE {lab.node_name.get(d['node'])}: {ins} -> {outs}"
    if k in ("leaf_grad", "retained"):
        return f"{'GRAD' if k == 'leaf_grad' else 'RETAIN'} {lab.s(d['grad'])} for {lab.s(d['target'])}"
    if k in ("backward_begin", "backward_end"):
        return f"BACKWARD {k.split('_')[1]} {d.get('index')}"
    if k == "error":
        return f"ERROR {d.get('type')}: {d.get('message')}"
    return None


def story(trace: Trace, tensors: pd.DataFrame, steps: pd.DataFrame, slots: Slots, node_name: dict) -> list[str]:
    """One line per event, each step's under its STEP line: a saved input's pack hook runs
    before the Python engine's dispatch mode meets the op (the event already carries the
    op's step), and after the native engine's op frame begins."""
    lab = _Labels(tensors, steps, node_name, slots.owner, slots.storage_of)
    ordered = sorted(trace.events, key=lambda ev: (ev.step, ev.kind != "step", ev.seq))
    return [line for line in (_line(ev, lab) for ev in ordered) if line]
