"""CSV writers: one per table, each writing only its own file. Columns are documented
in docs/reports.md and stay stable."""
from __future__ import annotations

import csv
import io
import json
import operator

import pandas as pd

from ..event_rows import encode_column, escape, lines_by_shape, literal, value_encoder
from ..files import EVENTS_CSV, MODULES_CSV, NODES_CSV, STEPS_CSV, SUMMARY, TENSORS_CSV


class CsvWriter:
    """Renders one DataFrame of an analysis as CSV."""

    def __init__(self, filename: str, table: str):
        self.filename = filename
        self.table = table

    def render(self, analysis) -> str:
        frame: pd.DataFrame = getattr(analysis, self.table)
        return frame.to_csv(index=False, lineterminator="\n")


class EventsCsvWriter:
    """One row per event: the keys every kind shares as columns, the rest as JSON in
    ``detail``. Long and narrow, so a million events write in seconds; ``cap.events``
    has the same events as a wide DataFrame. Built a line template at a time, as the
    trace file is (gradmem.event_rows): the bytes ``csv.writer`` would write."""

    filename = EVENTS_CSV
    KEYS = ("storage", "node", "pack")

    def render(self, analysis) -> str:
        return self.render_trace(analysis.trace)

    def render_trace(self, trace) -> str:
        """The file from the trace alone (render/early.py writes it before the analysis)."""
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerow(["seq", "t_ns", "kind", "step", *self.KEYS, "detail"])
        out.writelines(_event_rows(trace, self.KEYS))
        return out.getvalue()


def _event_rows(trace, keys: tuple) -> list[str]:
    def make(kind, names: tuple, indexes: list, heads: list):
        by_name = dict(zip(names, heads[3:]))
        shared = [by_name.pop(k, None) for k in keys]
        made = _template_rows(kind, heads[:3], shared, by_name, len(indexes))
        if made is None:   # a value csv.writer would quote or spell otherwise
            made = _plain_rows([trace.events[i] for i in indexes], keys)
        return made
    return lines_by_shape(trace, make)


_NEEDS_QUOTES = frozenset(',"\r\n')


def _template_rows(kind, heads: list, shared: list, rest: dict, n: int):
    """The rows of one shape, or None when a value is not a plain int (or None) where
    the template expects one, or the kind or a field name is unusual."""
    kind = str(kind)
    ints = heads + [c for c in shared if c is not None]
    if not kind or _NEEDS_QUOTES & set(kind) or not all(type(k) is str for k in rest) or \
            not all(set(map(type, c)) <= {int, type(None)} for c in ints):
        return None
    seq, t_ns, step = (list(map(str, c)) for c in heads)
    cells = [[""] * n if c is None else ["" if v is None else str(v) for v in c] for c in shared]
    template = "%s,%s," + literal(kind) + ",%s,%s,%s,%s,%s\n"
    return map(template.__mod__, zip(seq, t_ns, step, *cells, _details(rest, n)))


_QUOTED = operator.methodcaller("replace", '"', '""')


def _details(rest: dict, n: int) -> list[str]:
    """Each row's detail cell: its fields that are not None as compact JSON, quoted as
    csv.writer quotes it ("" for a row with none)."""
    parts, gaps = [], False
    for name, col in rest.items():
        prefix = escape(name) + ":"
        encoded = encode_column(col, _COMPACT, ",")
        if type(None) in set(map(type, col)):
            gaps = True
            parts.append(["" if v is None else prefix + e for v, e in zip(col, encoded)])
        else:
            parts.append([prefix + e for e in encoded])
    if not parts:
        return [""] * n
    if not gaps:
        return list(map('"{%s}"'.__mod__, map(_QUOTED, map(",".join, zip(*parts)))))
    bodies = [",".join(filter(None, p)) for p in zip(*parts)]
    return ['"{%s}"' % _QUOTED(b) if b else "" for b in bodies]


def _plain_rows(events, keys: tuple) -> list[str]:
    """The rows through csv.writer, one event at a time (one string each: a quoted cell
    may hold a line break)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    skip = set(keys)
    rows = []
    for seq, t_ns, kind, step, data in events:
        rest = {k: v for k, v in data.items() if v is not None and k not in skip}
        out.seek(0)
        out.truncate()
        writer.writerow((seq, t_ns, kind, step, *(data.get(k, "") for k in keys), _COMPACT(rest) if rest else ""))
        rows.append(out.getvalue())
    return rows


# one encoder for every row: json.dumps with non-default arguments builds a new one per call
_COMPACT = value_encoder(",", ":")


class SummaryJsonWriter:
    filename = SUMMARY

    def render(self, analysis) -> str:
        return json.dumps(analysis.summary.as_dict(), indent=2, default=_jsonable) + "\n"


def _jsonable(v):
    if pd.isna(v):
        return None
    if hasattr(v, "item"):
        return v.item()
    return str(v)


CSV_WRITERS = [CsvWriter(TENSORS_CSV, "tensors"), CsvWriter(STEPS_CSV, "steps"),
               CsvWriter(NODES_CSV, "nodes"), CsvWriter(MODULES_CSV, "modules"), EventsCsvWriter()]
