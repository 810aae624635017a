"""What was live at the peak, and why each storage was still alive then, in words: the facts
are ``analysis.at_peak``. Imports no torch."""
from __future__ import annotations

HOLDERS = {"variable": "program variable", "parameter": "module parameter", "buffer": "module buffer"}


def holder_text(holders: dict) -> dict[int, str]:
    """{storage: 'program variable `x`'}."""
    return {sid: f"{HOLDERS[src]} `{name}`" for sid, (src, name) in holders.items()}


def gradient_reason(g, step: int) -> str:
    """A gradient's reason to be alive at the peak, true at that moment (analysis.GradientAtPeak)."""
    if g is None:
        return "gradient in flight"
    node = g.consumer
    if g.state == "running":
        return f"gradient in flight: the input of {node.name}, running now (step {step})"
    if g.state == "waiting":
        return f"gradient in flight, waiting for {node.name} (it runs at step {node.step})"
    if g.state == "held_by_call":
        return (f"the gradient {g.call}() starts from: {node.name} used it at step {node.step}, and the {g.call}() "
                f"call holds it until it returns (step {g.free_step})")
    return f"{node.name} used it at step {node.step}; something else still holds it"


def why_alive(row, slots: dict, names: dict, gradients: dict, step: int) -> str:
    reasons = [f"saved slot {s}" for s in slots.get(row.id, [])]
    target = row.grad_of_name
    if row.role == "param_grad":
        reasons.append(f"`{target}.grad` (a leaf's gradient)")
    elif row.role == "retained_grad":
        reasons.append(f"retained grad of `{target}` (retain_grad())")
    elif row.role == "gradient":
        reasons.append(gradient_reason(gradients.get(row.id), step))
    elif row.role == "temporary":
        reasons.append(f"scratch inside {row.freed_after or row.created_by}")
    if row.id in names and row.role not in ("param_grad", "retained_grad"):
        reasons.append(names[row.id])
    return "; ".join(reasons) or "no holder recorded (an unnamed reference in the program or the graph)"


def peak_rows(analysis, limit: int) -> dict:
    """Every storage live at the peak (largest first, up to `limit`), with why it was alive."""
    p = analysis.at_peak
    live, names = p.live, holder_text(p.holders)
    rows = [{"id": int(r.id), "name": str(r.name), "role": r.role, "bytes": int(r.nbytes), "shape": r.shape,
             "why": why_alive(r, p.open_slots, names, p.gradients, analysis.peak.step),
             "module": str(r.module), "source": str(r.source)}
            for r in live.head(limit).itertuples()]
    return {"rows": rows, "total": int(len(live)), "bytes": int(live["nbytes"].sum())}
