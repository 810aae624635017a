"""What each step did, and the per-backward-node table: what backward needs, and when."""
from __future__ import annotations

import pandas as pd

from .tables import each_row, joined, pairs, known
from .slots import Slots


def _label(names: dict[int, str], sid) -> str:
    if not known(sid):
        return ""
    return names.get(int(sid), f"S{int(sid)}")


def _names_by_step(frame: pd.DataFrame, names: dict[int, str], key: str = "storage") -> dict:
    ids = frame[key]
    if ids.dtype.kind == "i":   # no storage missing: no test per value
        return joined(frame["step"], [names[s] if s in names else f"S{s}" for s in ids.tolist()])
    return joined(frame["step"], [_label(names, s) for s in ids.tolist()])


def annotate_steps(steps: pd.DataFrame, tables: dict, tensors: pd.DataFrame, slots: Slots) -> pd.DataFrame:
    names = pairs(tensors["id"], tensors["name"])
    alloc = tables["alloc"][~tables["alloc"]["preexisting"].astype(bool)]
    cols = {
        "allocated": _names_by_step(alloc, names),
        "freed": _names_by_step(tables["free"], names),
        "saved": _names_by_step(slots.saved, names),
        "unpacked": _names_by_step(slots.unpacked, names),
        "released": _names_by_step(slots.released, names),
    }
    out = steps.copy()
    for col, by_step in cols.items():
        out[col] = [by_step.get(s, "") for s in out["step"].tolist()]
    return out


NODE_COLUMNS = [
    "step", "node", "name", "backward", "unpacked", "unpacked_bytes", "unpacked_made_by",
    "grads_in", "grads_out", "allocated", "freed", "released", "live_before", "live_after",
    "peak_bytes", "duration_ns", "unpacked_made_at",
]


def _used_by_node(slots: Slots) -> dict[int, list[int]]:
    """{node: the storages it unpacked, in order}."""
    used: dict[int, list[int]] = {}
    for node, pack in each_row(slots.unpacked, "node", "pack"):
        sid = slots.storage_of.get(pack)
        if known(node) and sid is not None:
            seen = used.setdefault(int(node), [])
            if sid not in seen:
                seen.append(int(sid))
    return used


def nodes_table(steps: pd.DataFrame, tables: dict, tensors: pd.DataFrame, slots: Slots) -> pd.DataFrame:
    """One row per backward node run, in execution order."""
    names = pairs(tensors["id"], tensors["name"])
    nbytes = pairs(tensors["id"], tensors["nbytes"])
    made_by = pairs(tensors["id"], tensors["created_by"])
    made_at = pairs(tensors["id"], tensors["made_at"])   # the same, in the program's words
    used = _used_by_node(slots)
    ends = tables["node_end"].drop_duplicates("node", keep="last")
    grads = {int(n): (i, o) for n, i, o in each_row(ends, "node", "grads_in", "grads_out")}
    label = lambda ids: ";".join(_label(names, i) for i in ids or [] if i is not None)  # noqa: E731
    before = steps["live_bytes"].shift(1).fillna(0).astype("int64")
    duration = steps["t_ns"].shift(-1) - steps["t_ns"]
    rows = steps.assign(live_before=before, duration_ns=duration)
    rows = rows[rows["node"].notna()]   # filter after assign: assigning into an empty frame adopts the index
    out = []
    # the columns read, each iterated as itertuples would (a row tuple of all 33 costs more)
    for (step, node, op, backward, allocated, freed, released, live_before, live_bytes, peak_bytes,
         duration_ns) in zip(*(rows[c].tolist() for c in _ROW_COLUMNS)):   # plain lists: a string column iterates slowly
        nid = int(node)
        storages = used.get(nid, [])
        grads_in, grads_out = grads.get(nid, ([], []))
        out.append((step, nid, op, backward, label(storages), sum(nbytes.get(s, 0) for s in storages),
                    ";".join(str(made_by.get(s, "")) for s in storages), label(grads_in), label(grads_out),
                    allocated, freed, released, live_before, live_bytes, peak_bytes,
                    duration_ns if known(duration_ns) else pd.NA,
                    ";".join(str(made_at.get(s, "")) for s in storages)))
    return pd.DataFrame(out, columns=NODE_COLUMNS)


_ROW_COLUMNS = ("step", "node", "op", "backward", "allocated", "freed", "released", "live_before", "live_bytes",
                "peak_bytes", "duration_ns")
