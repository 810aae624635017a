"""The Trace: plain data shared by capture and analysis, and its JSON Lines file.

A trace file holds one JSON object per line: first a ``meta`` line, then one line per
event, then an ``end`` line. Readers take what they know and ignore the rest, so a file
from an older gradmem still loads (missing fields read as their defaults).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any, Iterable, NamedTuple

from .errors import TraceFileError

SCHEMA_VERSION = 1


class EventKind(str, Enum):
    STEP = "step"                      # a forward op, an engine op or a backward node begins
    ALLOC = "alloc"                    # a storage first seen (an op output, or pre-existing)
    FREE = "free"                      # a storage's memory was released
    TENSOR = "tensor"                  # facts about a tensor on a storage (requires_grad, leaf)
    NODE = "node"                      # a backward node discovered in the graph
    SAVED = "saved"                    # autograd packed a tensor into a saved slot
    SLOT = "slot"                      # which node and field own a saved slot
    HIDDEN_SLOT = "hidden_slot"        # a saved slot packed by someone else's hooks
    UNPACKED = "unpacked"              # a backward node used a saved slot
    RELEASED = "released"              # a saved slot was released by the engine
    NODE_END = "node_end"              # a backward node finished; what gradients it produced
    GRAD = "grad"                      # a gradient arrived for a tensor (register_hook)
    LEAF_GRAD = "leaf_grad"            # a leaf's .grad was set (post-accumulate hook)
    RETAINED = "retained"              # retain_grad() kept a copy as a non-leaf's .grad
    NAME = "name"                      # a program variable names a storage
    BACKWARD_BEGIN = "backward_begin"  # .backward() / autograd.grad() called
    BACKWARD_END = "backward_end"
    ERROR = "error"                    # the profiled program raised
    NOTE = "note"                      # a caveat the capture noticed (text)
    ALLOCATOR = "allocator"            # the allocator's own record: one allocation (+) or free (-)
    CLOCK = "clock"                    # how the allocator's clock was aligned with the hooks' clock
    RSS = "rss"                        # the process's resident memory, sampled every few ms
    DEVICE_MEMORY = "device_memory"    # a CUDA allocator reading (allocated, reserved) after a step

    def __str__(self) -> str:
        return self.value


class KIND:
    """The kinds as plain strings, for the capture's hot path: looking up an Enum member
    costs about 0.7 us on Python 3.11, this about 0.03 us. Filled from EventKind below."""


for _kind in EventKind:
    setattr(KIND, _kind.name, _kind.value)


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


@dataclass(frozen=True)
class Trace:
    meta: Meta
    events: tuple[Event, ...]

    @property
    def partial(self) -> bool:
        return self.meta.status != "complete"

    def with_meta(self, **changes: Any) -> "Trace":
        return Trace(replace(self.meta, **changes), self.events)


def _meta_line(meta: Meta) -> dict:
    line = {"kind": "meta", **asdict(meta)}
    line["notes"] = list(meta.notes)
    return line


def write_trace(trace: Trace, path: str | os.PathLike) -> Path:
    """Write the trace atomically: a reader never sees half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        out.write(json.dumps(_meta_line(trace.meta)) + "\n")
        for ev in trace.events:
            line = {"seq": ev.seq, "t": ev.t_ns, "kind": str(ev.kind), "step": ev.step}
            line.update(ev.data)
            out.write(json.dumps(line) + "\n")
        out.write(json.dumps({"kind": "end", "events": len(trace.events)}) + "\n")
    os.replace(tmp, path)
    return path


_EVENT_KEYS = ("seq", "t", "kind", "step")


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
        notes = meta.notes + (f"the trace file ends early after {len(events)} events",)
        meta = replace(meta, status="partial", notes=notes)
    return Trace(meta, tuple(events))
