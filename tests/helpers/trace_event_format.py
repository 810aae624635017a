"""A checker for the Trace Event Format (the JSON that chrome://tracing and Perfetto read).

``problems(doc)`` returns what is wrong, as sentences; an empty list means the document
follows the rules we rely on: the keys each phase requires, timestamps in order,
complete events ("X") that nest on their thread, async begin/end ("b"/"e") in matched
pairs, and flows ("s"/"f") whose ends both sit inside a slice.
See https://docs.google.com/document/d/1CvAClvFfyA5R-PhYUmn5OOQtYMH4h6I0nSsKchNAySU
"""
from __future__ import annotations

from collections import defaultdict

REQUIRED = {
    "X": ("name", "ts", "dur", "pid", "tid"),
    "B": ("name", "ts", "pid", "tid"),
    "E": ("ts", "pid", "tid"),
    "C": ("name", "ts", "pid", "args"),
    "b": ("name", "cat", "id", "ts", "pid", "tid"),
    "e": ("name", "cat", "id", "ts", "pid", "tid"),
    "s": ("name", "cat", "id", "ts", "pid", "tid"),
    "f": ("name", "cat", "id", "ts", "pid", "tid"),
    "M": ("name", "pid", "args"),
}
METADATA_NAMES = {"process_name", "process_labels", "process_sort_index", "thread_name", "thread_sort_index"}


def problems(doc) -> list[str]:
    if not isinstance(doc, dict) or not isinstance(doc.get("traceEvents"), list):
        return ["the document is not an object with a traceEvents list"]
    events = doc["traceEvents"]
    found = [p for i, e in enumerate(events) for p in keys(i, e)]
    if found:
        return found
    return ordering(events) + nesting(events) + async_pairs(events) + flows(events) + names(events)


def keys(i: int, e) -> list[str]:
    if not isinstance(e, dict) or e.get("ph") not in REQUIRED:
        return [f"event {i}: unknown phase {e.get('ph') if isinstance(e, dict) else e!r}"]
    out = [f"event {i} ({e['ph']}): no {k!r}" for k in REQUIRED[e["ph"]] if k not in e]
    if "ts" in e and not (isinstance(e["ts"], (int, float)) and e["ts"] >= 0):
        out.append(f"event {i}: ts {e['ts']!r} is not a non-negative number")
    if e["ph"] == "X" and "dur" in e and not e["dur"] >= 0:
        out.append(f"event {i}: negative dur")
    if e["ph"] == "C" and not all(isinstance(v, (int, float)) for v in e.get("args", {}).values()):
        out.append(f"event {i}: counter args must be numbers")
    if e["ph"] == "M" and (e["name"] not in METADATA_NAMES or not isinstance(e["args"], dict)):
        out.append(f"event {i}: bad metadata event {e['name']!r}")
    return out


def ordering(events) -> list[str]:
    timed = [e for e in events if e["ph"] != "M"]
    return [f"events out of order: ts {a['ts']} then {b['ts']}" for a, b in zip(timed, timed[1:]) if b["ts"] < a["ts"]][:1]


def slices_by_thread(events) -> dict:
    threads = defaultdict(list)
    for e in events:
        if e["ph"] == "X":
            threads[(e["pid"], e["tid"])].append((e["ts"], e["ts"] + e["dur"], e["name"]))
    return threads


def nesting(events) -> list[str]:
    """Slices on one thread either nest or follow each other; B/E pair up like brackets."""
    out = []
    for thread, slices in slices_by_thread(events).items():
        stack = []
        for start, end, name in sorted(slices, key=lambda s: (s[0], -s[1])):
            while stack and stack[-1][1] <= start:
                stack.pop()
            if stack and end > stack[-1][1] + 1e-6:
                out.append(f"thread {thread}: {name} [{start}, {end}] overlaps {stack[-1][2]} without nesting")
            stack.append((start, end, name))
    depth = defaultdict(int)
    for e in events:
        if e["ph"] in "BE":
            depth[(e["pid"], e["tid"])] += 1 if e["ph"] == "B" else -1
            if depth[(e["pid"], e["tid"])] < 0:
                out.append(f"thread {(e['pid'], e['tid'])}: E without B at ts {e['ts']}")
    out += [f"thread {t}: {d} B events never end" for t, d in depth.items() if d > 0]
    return out


def async_pairs(events) -> list[str]:
    """Every async "b" has one "e" later, with the same category, id and name."""
    open_, out = {}, []
    for e in events:
        if e["ph"] not in "be":
            continue
        key = (e["pid"], e["cat"], e["id"])
        if e["ph"] == "b":
            if key in open_:
                out.append(f"async {key}: begins twice")
            open_[key] = e
        elif key not in open_:
            out.append(f"async {key}: ends without a begin")
        else:
            begin = open_.pop(key)
            if begin["name"] != e["name"] or e["ts"] < begin["ts"]:
                out.append(f"async {key}: end does not match its begin")
    return out + [f"async {key}: never ends" for key in open_]


def _inside(threads, e) -> bool:
    return any(start <= e["ts"] <= end for start, end, _ in threads.get((e["pid"], e["tid"]), []))


def flows(events) -> list[str]:
    """Each flow id has one start and one finish, in time order, each inside a slice."""
    threads, by_id, out = slices_by_thread(events), defaultdict(dict), []
    for e in events:
        if e["ph"] in "sf":
            if e["ph"] in by_id[e["id"]]:
                out.append(f"flow {e['id']}: two {e['ph']!r} events")
            by_id[e["id"]][e["ph"]] = e
            if not _inside(threads, e):
                out.append(f"flow {e['id']}: {e['ph']!r} at ts {e['ts']} is in no slice of its thread")
    for fid, ends in by_id.items():
        if set(ends) != {"s", "f"}:
            out.append(f"flow {fid}: has {sorted(ends)}, needs a start and a finish")
        elif ends["f"]["ts"] < ends["s"]["ts"]:
            out.append(f"flow {fid}: finishes before it starts")
    return out


def names(events) -> list[str]:
    """Every thread that holds slices is named by a thread_name metadata event."""
    named = {(e["pid"], e["tid"]) for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    used = {(e["pid"], e["tid"]) for e in events if e["ph"] in "XBEsf"}
    return [f"thread {t} has no thread_name" for t in sorted(used - named)]
