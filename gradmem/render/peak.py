"""What was live at the peak, and why each storage was still alive then. Imports no torch."""
from __future__ import annotations

import pandas as pd

from ..analysis.timeline import live_at

HOLDERS = {"variable": "program variable", "parameter": "module parameter", "buffer": "module buffer"}


def open_slots(frames: dict, node_names: dict, seq: int) -> dict[int, list[str]]:
    """{storage: ["Node.field", ...]} for the saved slots still held just after event `seq`."""
    saved = frames["saved"][frames["saved"]["seq"] <= seq]
    released = frames["released"].drop_duplicates("pack").set_index("pack")["seq"]
    still = saved[saved["pack"].map(released).fillna(float("inf")) > seq]
    slot = frames["slot"].drop_duplicates("pack")
    owner = {p: f"{node_names.get(int(n), n)}.{f}" for p, n, f in zip(slot["pack"], slot["node"], slot["field"])}
    out: dict[int, list[str]] = {}
    for pack, storage in zip(still["pack"], still["storage"]):
        out.setdefault(int(storage), []).append(owner.get(pack, "(unknown node)"))
    return out


def program_names(frames: dict) -> dict[int, str]:
    """{storage: 'program variable `x`'} for storages the program's own names pointed at."""
    names = frames["name"][frames["name"]["source"].isin(list(HOLDERS))]
    first = names.drop_duplicates("storage")
    return {int(s): f"{HOLDERS[src]} `{n}`" for s, n, src in zip(first["storage"], first["name"], first["source"])}


def gradient_consumers(frames: dict, node_names: dict) -> dict[int, tuple[str, int, int]]:
    """{gradient storage: (the backward node that took it as input, its step, the seq its run ended)}."""
    out: dict[int, tuple[str, int, int]] = {}
    ends = frames["node_end"]
    for node, grads, step, seq in zip(ends["node"], ends["grads_in"], ends["step"], ends["seq"]):
        for g in grads or []:
            if g is not None:
                out.setdefault(int(g), (node_names.get(int(node), str(node)), int(step), int(seq)))
    return out


def gradient_reason(row, consumers: dict, seq: int, step: int) -> str:
    """Why a gradient is alive just after event ``seq`` (in ``step``), true at that moment:
    waiting for its node, being used by it, or already used and held by the backward() call."""
    if row.id not in consumers:
        return "gradient in flight"
    node, node_step, end_seq = consumers[row.id]
    if end_seq > seq:
        if node_step == step:
            return f"gradient in flight: the input of {node}, running now (step {step})"
        return f"gradient in flight, waiting for {node} (it runs at step {node_step})"
    if str(row.freed_after).endswith("() returned)"):
        call = str(row.freed_after)[1:].split("()")[0]
        return (f"the gradient {call}() starts from: {node} used it at step {node_step}, and the {call}() call "
                f"holds it until it returns (step {int(row.free_step)})")
    return f"{node} used it at step {node_step}; something else still holds it"


def why_alive(row, slots: dict, names: dict, consumers: dict, tensor_names: dict, seq: int = -1, step: int = 0) -> str:
    reasons = [f"saved slot {s}" for s in slots.get(row.id, [])]
    target = tensor_names.get(int(row.grad_of), "?") if pd.notna(row.grad_of) else "?"
    if row.role == "param_grad":
        reasons.append(f"`{target}.grad` (a leaf's gradient)")
    elif row.role == "retained_grad":
        reasons.append(f"retained grad of `{target}` (retain_grad())")
    elif row.role == "gradient":
        reasons.append(gradient_reason(row, consumers, seq, step))
    elif row.role == "temporary":
        reasons.append(f"scratch inside {row.freed_after or row.created_by}")
    if row.id in names and row.role not in ("param_grad", "retained_grad"):
        reasons.append(names[row.id])
    return "; ".join(reasons) or "no holder recorded (an unnamed reference in the program or the graph)"


def step_of(timeline: pd.DataFrame, seq: int) -> int:
    """The step event ``seq`` happened in (the timeline holds every alloc and free)."""
    at = timeline.loc[timeline["seq"] == seq, "step"]
    return int(at.iloc[0]) if len(at) else 0


def peak_rows(analysis, peak_seq: int, limit: int) -> dict:
    """Every storage live at the peak (largest first, up to `limit`), with why it was alive."""
    live = live_at(analysis.tensors, peak_seq).sort_values(["nbytes", "alloc_seq"], ascending=[False, True])
    f, nn = analysis.frames, analysis.node_names
    slots, names, consumers = open_slots(f, nn, peak_seq), program_names(f), gradient_consumers(f, nn)
    tensor_names = dict(zip(analysis.tensors["id"], analysis.tensors["name"]))
    rows = [{"id": int(r.id), "name": str(r.name), "role": r.role, "bytes": int(r.nbytes), "shape": r.shape,
             "why": why_alive(r, slots, names, consumers, tensor_names, peak_seq, step_of(analysis.timeline, peak_seq))}
            for r in live.head(limit).itertuples()]
    return {"rows": rows, "total": int(len(live)), "bytes": int(live["nbytes"].sum())}
