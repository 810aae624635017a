"""What was live at the peak, and why each storage was still alive then. Imports no torch."""
from __future__ import annotations

import pandas as pd

from ..analysis.timeline import live_at

HOLDERS = {"variable": "program variable", "parameter": "module parameter", "buffer": "module buffer"}


def program_names(frames: dict) -> dict[int, str]:
    """{storage: 'program variable `x`'} for storages the program's own names pointed at."""
    names = frames["name"][frames["name"]["source"].isin(list(HOLDERS))]
    first = names.drop_duplicates("storage")
    return {int(s): f"{HOLDERS[src]} `{n}`" for s, n, src in zip(first["storage"], first["name"], first["source"])}


def why_alive(row, slots: dict, names: dict, consumers: dict, tensor_names: dict) -> str:
    reasons = [f"saved slot {s}" for s in slots.get(row.id, [])]
    target = tensor_names.get(int(row.grad_of), "?") if pd.notna(row.grad_of) else "?"
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


def peak_rows(analysis, peak_seq: int, limit: int) -> dict:
    """Every storage live at the peak (largest first, up to `limit`), with why it was alive."""
    live = live_at(analysis.tensors, peak_seq).sort_values(["nbytes", "alloc_seq"], ascending=[False, True])
    slots, names = analysis.slots.open_at(peak_seq, "(unknown node)"), program_names(analysis.frames)
    consumers = analysis.consumers
    tensor_names = dict(zip(analysis.tensors["id"], analysis.tensors["name"]))
    rows = [{"id": int(r.id), "name": str(r.name), "role": r.role, "bytes": int(r.nbytes), "shape": r.shape,
             "why": why_alive(r, slots, names, consumers, tensor_names)}
            for r in live.head(limit).itertuples()]
    return {"rows": rows, "total": int(len(live)), "bytes": int(live["nbytes"].sum())}
