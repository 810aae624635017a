"""The one place events become DataFrames: one frame per event kind."""
from __future__ import annotations

import operator
from collections import defaultdict
from dataclasses import fields

import numpy as np
import pandas as pd

from ..events import FIELDS, SCHEMA
from ..trace import Trace

# the columns each kind's frame always has, so passes never test for missing columns;
# declared once, as the event schema (gradmem/events.py)
KIND_COLUMNS = {kind: list(names) for kind, names in FIELDS.items()}
# the columns declared as integers: built straight as int64 where every value is one, as
# pandas would infer them, without its inference pass (9x slower on 200,000 events)
INT_COLUMNS = {str(kind): {"seq", "t_ns", "step"} | {f.name for f in fields(cls) if str(f.type).startswith("int")}
               for kind, cls in SCHEMA.items()}


def by_kind(trace: Trace) -> dict[str, pd.DataFrame]:
    """{kind: DataFrame(seq, t_ns, step, <kind's columns>)}, each sorted by seq. From the
    trace's columns (``Trace.shapes``): no Python call per event and field."""
    parts: dict[str, list] = defaultdict(list)
    for (kind, names), columns in trace.shapes.items():
        parts[str(kind)].append((names, columns))
    return {kind: pd.DataFrame({name: _column(values, name in INT_COLUMNS[kind])
                                for name, values in _kind_data(parts.get(kind, []), columns).items()})
            for kind, columns in KIND_COLUMNS.items()}


def _column(values: list, integers: bool):
    """``values`` as an int64 array when declared and all integers, else as they are (for
    pandas to infer: a None among integers, a number past int64, an empty column)."""
    if integers and values:
        try:
            return np.fromiter(values, dtype=np.int64, count=len(values))   # half np.array's time on a list of ints
        except (TypeError, ValueError, OverflowError):
            pass
    return values


def _kind_data(parts: list, columns: list) -> dict[str, list]:
    """One kind's columns, its events in trace order, None where an event lacks a field."""
    data = {name: [] for name in ["seq", "t_ns", "step", *columns]}
    order = []
    for names, (indexes, seq, t_ns, step, *values) in parts:
        order += indexes
        given = dict(zip(names, values), seq=seq, t_ns=t_ns, step=step)
        for name, out in data.items():
            out += given.get(name) or [None] * len(indexes)
    if len(parts) > 1:   # several field sets of one kind: back into trace order
        pick = operator.itemgetter(*sorted(range(len(order)), key=order.__getitem__))
        data = {name: list(pick(out)) for name, out in data.items()}
    return data


def event_columns() -> list[str]:
    columns = ["seq", "t_ns", "kind", "step"]
    for kind_cols in KIND_COLUMNS.values():
        columns += [c for c in kind_cols if c not in columns]
    return columns


def events_table(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per event, the kind-specific fields as columns (empty where not used)."""
    parts = [f.assign(kind=kind) for kind, f in tables.items() if len(f)]
    if not parts:
        return pd.DataFrame(columns=event_columns())
    table = pd.concat(parts, ignore_index=True).sort_values("seq", kind="stable")
    return table.reindex(columns=event_columns()).reset_index(drop=True)


def text(series: pd.Series) -> pd.Series:
    """Strings with "" for missing values, whatever dtype the series came in."""
    return series.astype(object).where(series.notna(), "")


def each_row(frame: pd.DataFrame, *names: str):
    """The rows of a few columns as plain Python values (``.tolist()``: iterating a pandas
    string or nullable column yields the same values, element by element, far slower)."""
    return zip(*(frame[name].tolist() for name in names))


def known(value) -> bool:
    """``pd.notna`` of one value, without its dispatch (a loop over 20,000 rows calls it
    per row): False for None, NaN, NaT and pd.NA."""
    return value is not None and value is not pd.NA and value == value


def pairs(keys: pd.Series, values: pd.Series) -> dict:
    """{key: value} from two columns. Through plain lists: iterating pandas' string and
    nullable columns element by element is several times slower."""
    return dict(zip(keys.tolist(), values.tolist()))


def joined(keys, values) -> dict:
    """{key: "v1;v2"}: the distinct non-empty values of each key, in order. A plain loop:
    a pandas groupby with a Python join per group is far slower with many small groups."""
    out: dict = {}
    keys = keys.tolist() if hasattr(keys, "tolist") else keys
    values = values.tolist() if hasattr(values, "tolist") else values
    for key, value in zip(keys, values):
        if value:
            seen = out.setdefault(key, [])
            if value not in seen:
                seen.append(value)
    return {k: ";".join(v) for k, v in out.items()}
