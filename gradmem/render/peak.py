"""What was live at the peak, and why each storage was still alive then, in words: the facts
are ``analysis.at_peak``. Imports no torch."""
from __future__ import annotations

HOLDERS = {"variable": "program variable", "parameter": "module parameter", "buffer": "module buffer"}


def holder_text(holders: dict) -> dict[int, str]:
    """{storage: 'program variable `x`'}."""
    return {sid: f"{HOLDERS[src]} `{name}`" for sid, (src, name) in holders.items()}


def why_alive(row, slots: dict, names: dict, consumers: dict) -> str:
    reasons = [f"saved slot {s}" for s in slots.get(row.id, [])]
    target = row.grad_of_name
    if row.role == "param_grad":
        reasons.append(f"`{target}.grad` (a leaf's gradient)")
    elif row.role == "retained_grad":
        reasons.append(f"retained grad of `{target}` (retain_grad())")
    elif row.role == "gradient":
        reasons.append(f"gradient in flight, waiting for {consumers[row.id].name}" if row.id in consumers
                       else "gradient in flight")
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
             "why": why_alive(r, p.open_slots, names, p.consumers)}
            for r in live.head(limit).itertuples()]
    return {"rows": rows, "total": int(len(live)), "bytes": int(live["nbytes"].sum())}
