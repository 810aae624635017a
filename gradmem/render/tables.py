"""CSV writers: one per table, each writing only its own file. Columns are documented
in docs/reports.md and stay stable."""
from __future__ import annotations

import csv
import io
import json

import pandas as pd
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
    has the same events as a wide DataFrame."""

    filename = EVENTS_CSV
    KEYS = ("storage", "node", "pack")

    def render(self, analysis) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["seq", "t_ns", "kind", "step", *self.KEYS, "detail"])
        keys = set(self.KEYS)
        rows = []
        for seq, t_ns, kind, step, data in analysis.trace.events:
            rest = {k: v for k, v in data.items() if v is not None and k not in keys}
            get = data.get
            rows.append((seq, t_ns, kind, step, get("storage", ""), get("node", ""), get("pack", ""),
                         _COMPACT(rest) if rest else ""))
        writer.writerows(rows)
        return out.getvalue()


# one encoder for every row: json.dumps with non-default arguments builds a new one per call
_COMPACT = json.JSONEncoder(separators=(",", ":")).encode





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
