"""The trace file: round trip, older files, truncated files, not-a-trace, newer schema."""
import csv
import json

import pytest

from gradmem.analysis import analyze
from gradmem.render.tables import EventsCsvWriter

from gradmem.errors import TraceFileError
from gradmem.trace import Event, Meta, Trace, read_trace, write_trace


def sample():
    events = (Event(0, 10, "step", 1, {"phase": "forward", "op": "mv", "node": None, "backward": None}),
              Event(1, 11, "alloc", 1, {"storage": 1, "nbytes": 8, "op": "mv", "shape": [2]}))
    return Trace(Meta(scenario="s", params={"n": 2}), events)


def test_round_trip(tmp_path):
    path = write_trace(sample(), tmp_path / "t.jsonl")
    back = read_trace(path)
    assert back.meta == sample().meta and back.events == sample().events and not back.partial


def test_older_file_without_new_fields_loads(tmp_path):
    path = tmp_path / "old.jsonl"
    path.write_text('{"kind": "meta", "scenario": "old"}\n{"seq": 0, "kind": "free", "storage": 3}\n{"kind": "end"}\n')
    t = read_trace(path)
    assert t.meta.scenario == "old" and t.meta.schema == 1 and t.events[0].get("storage") == 3


def test_truncated_file_is_partial(tmp_path):
    path = write_trace(sample(), tmp_path / "t.jsonl")
    text = path.read_text()
    path.write_text(text[: text.rindex('{"kind": "end"') - 5])
    t = read_trace(path)
    assert t.partial and len(t.events) == 1 and "ends early" in t.meta.notes[-1]


def test_not_a_trace(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text("hello\n")
    with pytest.raises(TraceFileError, match="not a gradmem trace"):
        read_trace(path)
    path.write_text('{"seq": 1}\n')
    with pytest.raises(TraceFileError, match="no meta line"):
        read_trace(path)


def test_newer_schema_refused(tmp_path):
    path = tmp_path / "new.jsonl"
    path.write_text(json.dumps({"kind": "meta", "schema": 99}) + "\n")
    with pytest.raises(TraceFileError, match="schema 99 is newer"):
        read_trace(path)


def test_events_csv_round_trips_every_field():
    trace = sample()
    rows = list(csv.DictReader(EventsCsvWriter().render(analyze(trace)).splitlines()))
    assert [r["kind"] for r in rows] == ["step", "alloc"]
    alloc = rows[1]
    assert alloc["storage"] == "1" and json.loads(alloc["detail"]) == {"nbytes": 8, "op": "mv", "shape": [2]}
