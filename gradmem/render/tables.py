"""CSV writers: one per table, each writing only its own file. Columns are documented
in docs/reports.md and stay stable."""
from __future__ import annotations

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


class EventsCsvWriter(CsvWriter):
    def __init__(self):
        super().__init__("events.csv", "events")

    def render(self, analysis) -> str:
        frame = analysis.events
        for col in ("shape", "next", "grads_in", "grads_out", "roots"):
            frame[col] = frame[col].map(lambda v: json.dumps(v) if isinstance(v, list) else v)
        return frame.to_csv(index=False, lineterminator="\n")


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
