"""The one place events become DataFrames: one frame per event kind."""
from __future__ import annotations

from collections import defaultdict

import pandas as pd

from ..trace import Trace

# the columns each kind's frame always has, so passes never test for missing columns
KIND_COLUMNS = {
    "step": ["phase", "op", "node", "backward"],
    "alloc": ["storage", "nbytes", "device", "dtype", "shape", "op", "preexisting", "factory", "value", "recompute", "grad_args"],
    "free": ["storage"],
    "tensor": ["storage", "requires_grad", "leaf", "node", "output_nr"],
    "node": ["node", "name", "next", "leaf"],
    "saved": ["pack", "storage", "shape", "dtype", "numel", "element_size"],
    "slot": ["pack", "node", "field"],
    "hidden_slot": ["node", "field", "hook", "storage"],
    "unpacked": ["pack", "node"],
    "released": ["pack"],
    "node_end": ["node", "grads_in", "grads_out"],
    "grad": ["target", "grad"],
    "leaf_grad": ["target", "grad", "value"],
    "retained": ["target", "grad", "value"],
    "name": ["storage", "name", "source"],
    "backward_begin": ["index", "call", "roots", "retain_graph", "create_graph"],
    "backward_end": ["index"],
    "error": ["type", "message", "file", "line"],
}


def by_kind(trace: Trace) -> dict[str, pd.DataFrame]:
    """{kind: DataFrame(seq, t_ns, step, <kind's columns>)}, each sorted by seq."""
    rows: dict[str, list] = defaultdict(list)
    for ev in trace.events:
        rows[str(ev.kind)].append(ev)
    frames = {}
    for kind, columns in KIND_COLUMNS.items():
        evs = rows.get(kind, [])
        data = {"seq": [e.seq for e in evs], "t_ns": [e.t_ns for e in evs], "step": [e.step for e in evs]}
        for col in columns:
            data[col] = [e.data.get(col) for e in evs]
        frames[kind] = pd.DataFrame(data)
    return frames


def events_table(trace: Trace) -> pd.DataFrame:
    """One row per event, the kind-specific fields as columns (empty where not used)."""
    records = [{"seq": e.seq, "t_ns": e.t_ns, "kind": str(e.kind), "step": e.step, **e.data} for e in trace.events]
    columns = ["seq", "t_ns", "kind", "step"]
    for kind_cols in KIND_COLUMNS.values():
        columns += [c for c in kind_cols if c not in columns]
    return pd.DataFrame.from_records(records, columns=columns)


def text(series: pd.Series) -> pd.Series:
    """Strings with "" for missing values, whatever dtype the series came in."""
    return series.astype(object).where(series.notna(), "")
