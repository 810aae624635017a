"""The Trace: plain data shared by capture and analysis, and its JSON Lines file.

A trace file holds one JSON object per line: first a ``meta`` line, then one line per
event, then an ``end`` line. Readers take what they know and ignore the rest, so a file
from an older gradmem still loads (missing fields read as their defaults).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, NamedTuple

from . import event_rows as rows
from .errors import TraceFileError, where
from .files import atomic_open
from .events import EventKind  # noqa: F401  (the vocabulary; re-exported for readers of traces)
from .files import TRACE

SCHEMA_VERSION = 1


class Event(NamedTuple):
    """One thing that happened. ``data`` holds the kind-specific fields."""

    seq: int
    t_ns: int
    kind: str
    step: int
    data: dict

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)


@dataclass(frozen=True)
class Meta:
    scenario: str = ""
    params: dict = field(default_factory=dict)
    device: str = "cpu"
    torch_version: str = ""
    gradmem_version: str = ""
    python_version: str = ""
    schema: int = SCHEMA_VERSION
    started_at: str = ""
    status: str = "complete"           # complete | partial (the program failed or was stopped)
    retain_grad: str = "as-written"    # as-written | off | on (gradmem profile --retain-grad)
    error: dict | None = None          # type, message, file, line of the failure
    notes: tuple = ()                  # caveats the capture wants the reader to see
    mode: str = "real"                 # real | fake (fake tensors: shapes and bytes, no data: an estimate)
    capture_engine: str = "python"     # python (dispatch mode) | native (C++ extension), and why
    engine_reason: str = ""
    distributed: dict | None = None    # under torchrun: rank, local_rank, world_size, host, run_id, backend, device, capacity_bytes


class Trace:
    """The meta and the events. Made with its events (``Trace(meta, events)``), or by the
    capture with only their columns (``Trace(meta, None, shapes)``): then the ``Event``
    objects are built the first time something reads ``events`` (analysis, the trace file
    and events.csv read the columns), which a profile of 200,000 events never needs."""

    def __init__(self, meta: Meta, events: tuple[Event, ...] | None = None, shapes: dict | None = None):
        self.meta = meta
        if events is not None:
            self.__dict__["events"] = events
        if shapes is not None:
            self.__dict__["shapes"] = shapes
        if events is None and shapes is None:
            self.__dict__["events"] = ()

    def __eq__(self, other) -> bool:
        return isinstance(other, Trace) and (self.meta, self.events) == (other.meta, other.events)

    __hash__ = None

    def __repr__(self) -> str:
        return f"Trace({self.meta!r}, <{len(self)} events>)"

    def __len__(self) -> int:
        """The number of events, from whichever form the trace holds."""
        if "events" in self.__dict__:
            return len(self.events)
        return sum(len(columns[0]) for columns in self.shapes.values())

    @property
    def partial(self) -> bool:
        return self.meta.status != "complete"

    @cached_property
    def events(self) -> tuple[Event, ...]:
        return rows.events(self.shapes, Event)

    @cached_property
    def shapes(self) -> dict:
        """The events grouped by kind and field names, as columns (``event_rows.shapes``),
        worked out once for the trace file, events.csv and the analysis tables."""
        return rows.shapes(self.events)

    def with_meta(self, **changes: Any) -> "Trace":
        return Trace(replace(self.meta, **changes), self.__dict__.get("events"), self.__dict__.get("shapes"))


def _meta_line(meta: Meta) -> dict:
    line = {"kind": "meta", **asdict(meta)}
    line["notes"] = list(meta.notes)
    return line


def write_trace(trace: Trace, path: str | os.PathLike) -> Path:
    """Write the trace atomically: a reader never sees half a file."""
    path = Path(path)
    with atomic_open(path) as out:
        out.write(json.dumps(_meta_line(trace.meta)) + "\n")
        out.writelines(_event_lines(trace))
        out.write(json.dumps({"kind": "end", "events": len(trace)}) + "\n")
    return path


_EVENT_KEYS = ("seq", "t", "kind", "step")
_DUMPS = rows.value_encoder(", ", ": ")   # json.dumps(v), its encoder built once


def _event_lines(trace: Trace) -> list[str]:
    """Each event's line, ``json.dumps({seq, t, kind, step, **data})`` to the byte,
    built a line template at a time (gradmem.event_rows)."""
    def make(kind, names: tuple, indexes: list, cols: list):
        if set(names) & set(_EVENT_KEYS) or not all(type(n) is str for n in names):
            return [_event_line(trace.events[i]) for i in indexes]   # a field json.dumps would rename or merge
        return map(_template(kind, names).__mod__, zip(*[rows.encode_column(c, _DUMPS) for c in cols]))
    return rows.lines_by_shape(trace, make)


def _template(kind, names: tuple) -> str:
    """The ``%`` template of the lines of one kind with these fields (seq, t, step, values)."""
    fields = "".join(rows.literal(", " + rows.escape(n) + ": ") + "%s" for n in names)
    return '{"seq": %s, "t": %s, "kind": ' + rows.literal(rows.escape(str(kind))) + ', "step": %s' + fields + "}\n"


def _event_line(ev: Event) -> str:
    line = {"seq": ev.seq, "t": ev.t_ns, "kind": str(ev.kind), "step": ev.step}
    line.update(ev.data)
    return json.dumps(line) + "\n"


def _event_from(obj: dict) -> Event:
    data = {k: v for k, v in obj.items() if k not in _EVENT_KEYS}
    return Event(obj.get("seq", 0), obj.get("t", 0), obj["kind"], obj.get("step", 0), data)


def _meta_from(obj: dict, path: Path) -> Meta:
    schema = obj.get("schema", 1)
    if schema > SCHEMA_VERSION:
        raise TraceFileError(
            f"{path}:1: trace schema {schema} is newer than this gradmem understands "
            f"({SCHEMA_VERSION}). Upgrade gradmem to read it."
        )
    known = {f for f in Meta.__dataclass_fields__}
    kwargs = {k: v for k, v in obj.items() if k in known}
    kwargs["notes"] = tuple(kwargs.get("notes", ()))
    return Meta(**kwargs)


def _parse_lines(lines: Iterable[str], path: Path) -> tuple[dict | None, list[Event], bool]:
    meta, events, ended = None, [], False
    for lineno, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            if lineno == 1:
                raise TraceFileError(f"{path}:1: not a gradmem trace (not JSON Lines).") from exc
            return meta, events, False  # a truncated last line: keep what came before
        if lineno == 1 and (not isinstance(obj, dict) or obj.get("kind") != "meta"):
            raise TraceFileError(f"{path}:1: not a gradmem trace (no meta line).")
        kind = obj.get("kind")
        if kind == "meta":
            meta = obj
        elif kind == "end":
            ended = True
        else:
            events.append(_event_from(obj))
    return meta, events, ended


TRUNCATED = "the trace file ends early"


def find_trace(path: str | os.PathLike) -> Path:
    """The trace file a user meant: the path itself, or a report folder's trace.jsonl."""
    path = Path(path)
    if path.is_dir():
        inner = path / TRACE
        if not inner.is_file():
            raise TraceFileError(f"{path}: is a folder with no trace.jsonl in it. Give a trace file, or a report "
                                 "folder gradmem wrote (each holds its run's trace.jsonl).")
        return inner
    return path


def partial_line(trace: Trace, path) -> str | None:
    """One line for stderr when a trace is partial: where it stops, and why if known."""
    if not trace.partial:
        return None
    cut = [n for n in trace.meta.notes if n.startswith(TRUNCATED)]
    if cut:
        return f"gradmem: warning: {path} is partial: {cut[-1]}; the reports show only what it holds."
    err = trace.meta.error or {}
    why = f"{err.get('type')} at {where(str(err.get('file') or 'the scenario'), err.get('line'))}" if err else "it was stopped"
    step = trace.events[-1].step if trace.events else 0
    return f"gradmem: warning: {path} is partial: its run stopped at step {step} ({why}); the reports show only what it holds."


def read_trace(path: str | os.PathLike) -> Trace:
    """Read a trace file. A truncated file loads as a partial trace."""
    path = Path(path)
    if not path.is_file():
        raise TraceFileError(f"{path}: no such trace file.")
    with open(path, encoding="utf-8") as src:
        meta_obj, events, ended = _parse_lines(src, path)
    if meta_obj is None:
        raise TraceFileError(f"{path}:1: not a gradmem trace (empty file).")
    meta = _meta_from(meta_obj, path)
    if not ended:
        at = f" (step {events[-1].step})" if events else ""
        notes = meta.notes + (f"{TRUNCATED} after {len(events)} events{at}",)
        meta = replace(meta, status="partial", notes=notes)
    return Trace(meta, tuple(events))
