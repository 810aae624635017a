"""The trace file: round trip, older files, truncated files, not-a-trace, newer schema."""
import csv
import io
import json
from types import SimpleNamespace

import pytest

from gradmem.analysis import analyze
from gradmem.render.tables import EventsCsvWriter

from gradmem.errors import TraceFileError
from gradmem.trace import Event, EventKind, Meta, Trace, read_trace, write_trace


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


def awkward():
    """Events whose values take every path of the column encoders (gradmem.event_rows):
    mixed types in one column, bools, floats (nan too), nested tuples and dicts, quotes,
    commas, newlines, non-ASCII, percent signs, a str subclass, and fields named like
    the line's own keys or not named by a str."""
    nan = float("nan")
    values = [1, None, True, 2.5, nan, "a,\"b\"\n%s é", ("x", (1, None)), {"k": [1, 2], 3: "v"}, -7, False, ""]
    events = []
    for i, v in enumerate(values * 2):
        events.append(Event(i, 100 + i, "alloc", i % 3, {"storage": i, "nbytes": 8, "factory": i % 2 == 0, "value": v,
                                                     "shape": (i, None, 2) if i % 4 else ()}))
        events.append(Event(i, 100 + i, "step", 1, {"phase": "forward", "op": f"op{i}%" if i % 3 else None, "node": None if i % 2 else i,
                                                  "grads": (i % 2, 1) if i % 3 else (True, 1)}))
    events += [Event(90, 1, "free", 2, {"storage": "s1"}), Event(91, 2, "we,ird", 2, {"x": 1}),
               Event(92, 3, "note", 2, {"text": "100%", "pack": None}), Event(93, 4, "x", 2, {}),
               Event(94, 5, "x", 2, {"step": 9}), Event(95, 6, "x", 2, {7: 1}), Event(96, 7, "x", True, {"a": None}),
               Event(97, 8, EventKind.FREE, 2, {"storage": 4, "node": 2.0}),
               Event(98, 9, "free", 2, {"storage": "a\nb\x0cc\u2028d"}), Event(99, 10, "free", 2, {"storage": 5})]
    return Trace(Meta(scenario="s"), tuple(events))


def int_lists():
    """Columns of lists for the ``str`` fast path (gradmem.event_rows._int_lists): ints
    and None, lists of those, empty lists, an int past 64 bits; and the columns that must
    not take it (a bool or a str inside, a tuple among the lists)."""
    columns = {
        "grads": lambda i: [i, None, -i, 2 ** 70][: i % 5],
        "next": lambda i: [[i, 0], None, [None, i % 3]] if i % 2 else [],
        "flags": lambda i: [i, True],
        "names": lambda i: [None, f"s{i}, None"],
        "mixed": lambda i: [i] if i % 3 else (i,),
    }
    events = [Event(i, 10 + i, "node_end", 1, {name: make(i) for name, make in columns.items()}) for i in range(12)]
    return Trace(Meta(scenario="s"), tuple(events))


@pytest.mark.parametrize("make", [awkward, int_lists])
def test_trace_lines_are_json_dumps_of_each_event(tmp_path, make):
    trace = make()
    lines = write_trace(trace, tmp_path / "t.jsonl").read_text(encoding="utf-8").splitlines()
    expected = [json.dumps({"seq": e.seq, "t": e.t_ns, "kind": str(e.kind), "step": e.step, **e.data})
                for e in trace.events]
    assert lines[1:-1] == expected and len(lines) == len(expected) + 2


@pytest.mark.parametrize("make", [awkward, int_lists])
def test_events_csv_is_csv_writer_of_each_event(make):
    trace = make()
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["seq", "t_ns", "kind", "step", "storage", "node", "pack", "detail"])
    for e in trace.events:
        rest = {k: v for k, v in e.data.items() if v is not None and k not in ("storage", "node", "pack")}
        writer.writerow([e.seq, e.t_ns, e.kind, e.step, *(e.data.get(k, "") for k in ("storage", "node", "pack")),
                         json.dumps(rest, separators=(",", ":")) if rest else ""])
    assert EventsCsvWriter().render(SimpleNamespace(trace=trace)) == out.getvalue()


def test_a_trace_made_from_columns_builds_the_same_events_when_read(tmp_path):
    """The capture hands over only the events' columns; the Event objects are built the
    first time something reads them, and match the file written from the columns."""
    import torch
    from gradmem.capture import Capture
    w = torch.ones(3, requires_grad=True)
    with Capture() as cap:
        ((w * 2) ** 2).sum().backward()
    trace = cap.trace
    assert "events" not in trace.__dict__ and len(trace) > 20   # not built yet; counted from the columns
    back = read_trace(write_trace(trace, tmp_path / "t.jsonl"))
    as_json = [(e.seq, e.t_ns, e.kind, e.step, json.loads(json.dumps(e.data))) for e in trace.events]
    assert as_json == [tuple(e) for e in back.events] and len(trace) == len(back.events)   # tuples read as lists
    assert trace == Trace(trace.meta, trace.events) and trace != back
    assert [e.seq for e in trace.events] == sorted(e.seq for e in trace.events)
