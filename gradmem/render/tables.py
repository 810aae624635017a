"""CSV writers: one per table, each writing only its own file. Columns are documented
in docs/reports.md and stay stable."""
from __future__ import annotations

import csv
import io
import json

import pandas as pd


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
    has the same events as a wide DataFrame."""

    filename = "events.csv"
    KEYS = ("storage", "node", "pack")

    def render(self, analysis) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["seq", "t_ns", "kind", "step", *self.KEYS, "detail"])
        for ev in analysis.trace.events:
            data = ev.data
            rest = {k: v for k, v in data.items() if k not in self.KEYS and v is not None}
            writer.writerow([ev.seq, ev.t_ns, str(ev.kind), ev.step, *(_cell(data.get(k)) for k in self.KEYS),
                             json.dumps(rest, separators=(",", ":")) if rest else ""])
        return out.getvalue()


def _cell(v):
    return "" if v is None else v


class SummaryJsonWriter:
    filename = "summary.json"

    def render(self, analysis) -> str:
        return json.dumps(analysis.summary, indent=2, default=_jsonable) + "\n"


def _jsonable(v):
    if pd.isna(v):
        return None
    if hasattr(v, "item"):
        return v.item()
    return str(v)


CSV_WRITERS = [CsvWriter("tensors.csv", "tensors"), CsvWriter("steps.csv", "steps"),
               CsvWriter("nodes.csv", "nodes"), EventsCsvWriter()]
