"""Chrome Trace Event / Perfetto JSON: open ``trace.chrome.json`` in ui.perfetto.dev or
chrome://tracing.

What is in it (all on one process, times in microseconds since the capture began):

- a "forward ops" track and a "backward nodes" track of complete events ("X"), one per
  step, so a slice spans from its step's start to the next step's start;
- counters ("C"): "live bytes by role" (one series per role) and "live bytes" (the total),
  updated at every allocation and free;
- one async span ("b"/"e") per storage lifetime on the "storages" track, id = gradmem's
  storage id (never an address), named after the tensor, category = its role;
- flows ("s"/"f") from the forward op that saved a tensor to each backward node that
  unpacked it;
- a "modules" track: one complete event per ``nn.Module`` call, nested as the calls were
  (name = the module's path, e.g. ``model.layers.0.self_attn``).
"""
from __future__ import annotations

import json

import pandas as pd

from ..roles import ROLE_ORDER
from ..files import CHROME

PID = 1
TRACKS = {"forward": 1, "backward": 2, "storages": 3, "modules": 4}
TRACK_NAMES = {1: "forward ops", 2: "backward nodes", 3: "storages", 4: "modules"}


class Clock:
    """Nanoseconds on the capture's clock -> microseconds since its first event."""

    def __init__(self, trace):
        self.t_of_seq = {ev.seq: ev.t_ns for ev in trace.events}
        times = list(self.t_of_seq.values()) or [0]
        self.t0, self.t_end = min(times), max(times)

    def us(self, t_ns) -> float:
        return (int(t_ns) - self.t0) / 1000

    def at_seq(self, seq) -> float:
        if pd.isna(seq) or int(seq) < 0:    # -1: alive before the capture
            return 0.0
        return self.us(self.t_of_seq.get(int(seq), self.t0))

    @property
    def end(self) -> float:
        return self.us(self.t_end)


def metadata(analysis) -> list[dict]:
    s = analysis.summary
    events = [{"ph": "M", "name": "process_name", "pid": PID, "tid": 0,
               "args": {"name": f"gradmem: {s.scenario or 'capture'} on {s.device}"}}]
    for tid, name in TRACK_NAMES.items():
        events.append({"ph": "M", "name": "thread_name", "pid": PID, "tid": tid, "args": {"name": name}})
        events.append({"ph": "M", "name": "thread_sort_index", "pid": PID, "tid": tid, "args": {"sort_index": tid}})
    return events


def step_slices(analysis, clock: Clock) -> dict[int, dict]:
    """{step: its "X" event}. A step lasts until 1 ns before the next one begins, so
    slices never overlap however a reader rounds microseconds."""
    steps = analysis.steps[analysis.steps["step"] > 0]
    starts = pd.Series([int(t) - clock.t0 for t in steps["t_ns"]], dtype="int64").cummax().tolist()
    ends = [max(s, nxt - 1) for s, nxt in zip(starts, starts[1:])] + [max(clock.t_end - clock.t0, *starts[-1:], 0)]
    slices = {}
    for row, start, end in zip(steps.itertuples(), starts, ends):
        track = "backward" if row.phase == "backward" else "forward"
        slices[int(row.step)] = {
            "ph": "X", "name": str(row.op), "cat": row.phase, "pid": PID, "tid": TRACKS[track],
            "ts": start / 1000, "dur": (end - start) / 1000, "args": _step_args(row),
        }
    return slices


def _step_args(row) -> dict:
    args = {"step": int(row.step), "live_bytes": int(row.live_bytes), "peak_bytes": int(row.peak_bytes)}
    if pd.notna(row.node):
        args["node"] = int(row.node)
    for key in ("allocated", "freed", "saved", "unpacked", "released"):
        if getattr(row, key):
            args[key] = getattr(row, key)
    return args


def counters(analysis, clock: Clock) -> list[dict]:
    """Live bytes after every allocation and free: by role, and the total."""
    d = analysis.timeline
    roles = [r for r in ROLE_ORDER if r in set(analysis.tensors["role"])]
    live = dict.fromkeys(roles, 0)
    events = []
    for seq, group in d.groupby("seq", sort=True):
        for role, delta in zip(group["role"], group["delta"]):
            live[role] += int(delta)
        ts = clock.at_seq(seq)
        events.append({"ph": "C", "name": "live bytes by role", "pid": PID, "tid": 0, "ts": ts, "args": dict(live)})
        events.append({"ph": "C", "name": "live bytes", "pid": PID, "tid": 0, "ts": ts,
                       "args": {"total": int(group["live"].iloc[-1])}})
    return events


def lifetimes(analysis, clock: Clock) -> list[dict]:
    """One async span per storage, from its allocation to its free (or the end)."""
    events = []
    for t in analysis.tensors.itertuples():
        common = {"name": str(t.name), "cat": str(t.role), "id": int(t.id), "pid": PID, "tid": TRACKS["storages"]}
        start = clock.at_seq(t.alloc_seq)
        end = clock.at_seq(t.free_seq) if pd.notna(t.free_seq) else clock.end
        events.append({**common, "ph": "b", "ts": start, "args": _storage_args(t)})
        events.append({**common, "ph": "e", "ts": max(start, end)})
    return events


def _storage_args(t) -> dict:
    args = {"storage": int(t.id), "shape": t.shape, "dtype": t.dtype, "nbytes": int(t.nbytes),
            "created_by": t.created_by, "alloc_step": int(t.alloc_step)}
    if pd.notna(t.free_step):
        args["free_step"] = int(t.free_step)
    for key in ("saved_by", "unpacked_by", "value", "module", "source"):
        value = getattr(t, key)
        if isinstance(value, str) and value:
            args[key] = value
    return args


def flows(analysis, slices: dict[int, dict]) -> list[dict]:
    """A flow from the op that saved a tensor to each backward node that unpacked it."""
    slots = analysis.slots
    saved = slots.saved.drop_duplicates("pack").set_index("pack")
    names = dict(zip(analysis.tensors["id"], analysis.tensors["name"]))
    events = []
    unpacked = slots.unpacked.dropna(subset=["node"])
    for flow_id, (pack, step) in enumerate(zip(unpacked["pack"], unpacked["step"]), 1):
        if pack not in saved.index:
            continue
        source, target = slices.get(int(saved.at[pack, "step"])), slices.get(int(step))
        if source is None or target is None:
            continue
        name = names.get(int(saved.at[pack, "storage"]), "")
        common = {"name": "saved for backward", "cat": "saved", "id": flow_id, "pid": PID}
        events.append({**common, "ph": "s", "tid": source["tid"], "ts": _middle(source), "args": {"tensor": name}})
        events.append({**common, "ph": "f", "bp": "e", "tid": target["tid"], "ts": _middle(target)})
    return events


def module_spans(analysis, clock: Clock) -> list[dict]:
    """One "X" event per module call; a call still running at the end lasts until then."""
    events = []
    for span in analysis.module_spans:
        start = clock.us(span["t0_ns"])
        end = clock.us(span["t1_ns"]) if span["t1_ns"] is not None else clock.end
        events.append({"ph": "X", "name": span["module"], "cat": "module", "pid": PID, "tid": TRACKS["modules"],
                       "ts": start, "dur": max(end - start, 0.0), "args": {"depth": span["depth"]}})
    return events


def _middle(slice_: dict) -> float:
    return slice_["ts"] + slice_["dur"] / 2


def chrome_trace(analysis) -> dict:
    clock = Clock(analysis.trace)
    slices = step_slices(analysis, clock)
    timed = (list(slices.values()) + counters(analysis, clock) + lifetimes(analysis, clock) + flows(analysis, slices)
             + module_spans(analysis, clock))
    timed.sort(key=lambda e: e["ts"])    # stable: a span's "b" stays before its "e"
    s = analysis.summary
    other = {k: s[k] for k in ("scenario", "device", "status", "torch_version", "gradmem_version")}
    return {"traceEvents": metadata(analysis) + timed, "displayTimeUnit": "ns", "otherData": other}


class ChromeTraceWriter:
    filename = CHROME

    def render(self, analysis) -> str:
        return json.dumps(chrome_trace(analysis), default=_plain) + "\n"


def _plain(v):
    return v.item() if hasattr(v, "item") else str(v)
