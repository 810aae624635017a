"""The merged files of a multi-process run, written into the job's folder beside rank<R>/:

- ``ranks.csv``: one row per rank (``analysis.ranks.RANK_COLUMNS``, see docs/reports.md);
- ``report.html``: one memory lane per rank on a shared y axis, the min / median / max
  envelope, the worst rank and the one with least headroom, why the worst rank differs
  from the median rank (``ranks_page.py``);
- ``trace.chrome.json``: each rank's Perfetto trace as one process (pid = rank + 1);
- ``memory_viz.pickle``: PyTorch's memory viewer, one device trace per rank.

Each file is written atomically. ``summary_text`` is what rank 0 (or the launcher) prints.
Formats facts ``analysis.ranks.merge`` computed; derives none. Imports no torch.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path

from . import MARKER, write_atomic
from .chrome import ChromeTraceWriter
from .memory_viz import snapshot
from .ranks_page import RanksHtmlWriter, why_lines
from .units import human_bytes
from ..files import CHROME, MEMORY_VIZ_PICKLE, RANKS_CSV, REPORT


def ranks_csv(result) -> str:
    return result.ranks.to_csv(index=False, lineterminator="\n")


def chrome_json(result) -> str:
    """Every rank's trace events, each rank its own process. Ranks on one host share the
    monotonic clock the hooks stamp, so their times are put on the earliest rank's start;
    ranks on other hosts each start at 0 (their clocks are not comparable)."""
    starts = {r: min((e.t_ns for e in a.trace.events), default=0) for r, a in result.analyses.items()}
    hosts = {r: (a.trace.meta.distributed or {}).get("host", "") for r, a in result.analyses.items()}
    events = []
    for r, a in result.analyses.items():
        same_host = [starts[q] for q in starts if hosts[q] == hosts[r]]
        shift_us = (starts[r] - min(same_host)) / 1000
        for ev in json.loads(ChromeTraceWriter().render(a))["traceEvents"]:
            ev["pid"] = r + 1
            if ev.get("ph") == "M" and ev.get("name") == "process_name":
                ev["args"] = {"name": f"rank {r}: {ev['args']['name']}"}
            elif "ts" in ev:
                ev["ts"] = ev["ts"] + shift_us
            if ev.get("ph") in ("s", "f", "b", "e") and "id" in ev:
                ev["id"] = f"{r}:{ev['id']}"      # ids are per rank; Perfetto's are global
            events.append(ev)
        events.append({"ph": "M", "name": "process_sort_index", "pid": r + 1, "tid": 0, "args": {"sort_index": r}})
    return json.dumps({"traceEvents": events, "displayTimeUnit": "ms"})


def memory_viz(result) -> bytes:
    """PyTorch's memory viewer with one device trace per rank (device r is rank r): each
    rank's busiest device, as its own report's ``memory_viz.pickle`` has it."""
    traces, segments = [], []
    for r in range(result.world_size):
        a = result.analyses.get(r)
        if a is None:
            traces.append([])
            continue
        snap = snapshot(a)
        home = max(range(len(snap["device_traces"])), key=lambda i: len(snap["device_traces"][i]))
        traces.append(snap["device_traces"][home])
        segments += [{**seg, "device": r} for seg in snap["segments"] if seg["device"] == home]
    return pickle.dumps({"segments": segments, "device_traces": traces}, protocol=4)


MERGED = {RANKS_CSV: ranks_csv, REPORT: lambda r: RanksHtmlWriter().render(r),
          CHROME: chrome_json, MEMORY_VIZ_PICKLE: memory_viz}


def write_merge(result, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MARKER).write_text("written by gradmem\n", encoding="utf-8")
    return [write_atomic(out_dir / name, render(result)) for name, render in MERGED.items()]


# -- the terminal summary -----------------------------------------------------------------------
def rank_line(r) -> str:
    if r.peak_bytes != r.peak_bytes:     # NaN: no report from this rank
        return f"  rank {r.rank}: {r.status}"
    tail = "" if r.status == "complete" else f"  [{str(r.status).upper()}]"
    return (f"  rank {r.rank}: peak {human_bytes(r.peak_bytes)} at step {int(r.peak_step)} ({r.peak_op}, {r.peak_phase})"
            + (f"; allocator peak {human_bytes(r.allocator_peak_bytes)}" if r.allocator_peak_bytes == r.allocator_peak_bytes else "")
            + tail)


def summary_text(result, files: list[Path] | None = None) -> str:
    first = next(iter(result.analyses.values()), None)
    d = (first.trace.meta.distributed or {}) if first else {}
    lines = [f"gradmem: {result.scenario or 'capture'} on {result.world_size} ranks "
             f"({d.get('backend') or 'no backend recorded'}, {first.summary['device'] if first else '?'})"]
    lines += [rank_line(r) for r in result.ranks.itertuples()]
    if result.worst is not None:
        lines.append(f"  worst rank: {result.worst}; least headroom: rank {result.least_headroom}; "
                     f"median rank: {result.median_rank}")
    lines += ["  " + line.replace("`", "") for line in why_lines(result.why)]
    lines += [f"  note: {n}" for n in result.notes]
    if files:
        folder = files[0].parent
        ranks = " ".join(f"rank{r}/" for r in result.analyses)
        lines.append(f"  wrote {folder}/: " + " ".join(f.name for f in files) + (f" {ranks}" if ranks else ""))
    return "\n".join(lines)
