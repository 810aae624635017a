"""The short summary printed after every run."""
from __future__ import annotations

from pathlib import Path

from ..errors import where
from .units import human_bytes, training_step_words

TOP = 5
ESTIMATE = "ESTIMATE (fake tensors, nothing allocated)"   # first words of a --fake run's summary and page


def _roles(by_role: dict) -> str:
    parts = sorted(((b, r) for r, b in by_role.items() if b), reverse=True)
    return ", ".join(f"{r} {human_bytes(b)}" for b, r in parts) or "nothing"


def _saved_lines(tensors) -> list[str]:
    saved = tensors[tensors["saved_by"] != ""].sort_values("nbytes", ascending=False)
    lines = []
    for r in saved.head(TOP).itertuples():
        extra = " (an input: saving it costs no new bytes)" if r.role == "input" else ""
        extra = " (a parameter: no new bytes)" if r.role == "parameter" else extra
        lines.append(f"    {r.name} {r.shape} {human_bytes(r.nbytes)} by {r.saved_by}{extra}")
    if len(saved) > TOP:
        lines.append(f"    ... and {len(saved) - TOP} more (tensors.csv, column saved_by)")
    return lines


def _module_lines(s: dict) -> list[str]:
    """The modules whose own storages (parameters included) held the most at the peak."""
    top = s.modules_at_peak
    if not top:
        return []
    return ["  modules holding the peak (their own storages; modules.csv has them all):",
            *[f"    {m['module']} ({m['type']}) {human_bytes(m['bytes'])}" for m in top[:TOP]]]


def _allocator_lines(est: dict | None) -> list[str]:
    if not est:
        return []
    return [f"  CUDA caching allocator (a model of its rounding): peak allocated {human_bytes(est['allocated_peak_bytes'])}, "
            f"peak reserved {human_bytes(est['reserved_peak_bytes'])} (tensor bytes above are exact storage sizes)"]


def tracked_peak(s) -> int:
    """The hooks-only peak (tracked tensors alone)."""
    return s.get("tracked_peak_bytes", s["peak_bytes"])


def _peak_lines(s) -> list[str]:
    """One statement of the peak (the allocator's when its record is on, kernel scratch
    included), then what it was made of, so the numbers add up."""
    where = f"step {s['peak_step']}, during {s['peak_op']}, in {s['peak_phase']}"
    if s.get("peak_source") != "allocator":
        return [f"  peak: {human_bytes(s['peak_bytes'])} at {where}", f"  live at the peak: {_roles(s['peak_by_role'])}"]
    scratch = s["peak_by_role"].get("unattributed", 0)
    tensors = {r: b for r, b in s["peak_by_role"].items() if r != "unattributed"}
    lines = [f"  peak: {human_bytes(s['peak_bytes'])} at {where}, as the allocator counts it: "
             f"{human_bytes(s['peak_bytes'] - scratch)} of tensors + {human_bytes(scratch)} of kernel scratch "
             "(buffers the kernels allocated themselves)",
             f"  those tensors by role: {_roles(tensors)}"]
    if tracked_peak(s) != s["peak_bytes"] - scratch or s.get("tracked_peak_step") != s["peak_step"]:
        lines.append(f"  tensors alone were at most {human_bytes(tracked_peak(s))} (step {s.get('tracked_peak_step')})")
    return lines


def _scratch_lines(s) -> list[str]:
    nodes = s.get("unattributed_by_node")
    if not nodes:
        return []
    parts = [f"{n['op']} {human_bytes(n['max_bytes'])}" + (f" ({n['calls']} calls)" if n["calls"] > 1 else "")
             for n in nodes[:3]]
    more = f", and {len(nodes) - 3} more" if len(nodes) > 3 else ""
    return [f"  kernel scratch by node (most in one call): {', '.join(parts)}{more}"]


def _backward_line(s: dict) -> str:
    calls = s.get("backward_calls") or 0
    nodes = f"{s['backward_nodes']} nodes" + (f" in {calls} calls" if calls > 1 else "")
    if s["backward_peak_bytes"] == tracked_peak(s) and s["backward_peak_step"] == s.get("tracked_peak_step", s["peak_step"]):
        return f"  backward: {nodes}; the tensors' highest point above was inside it"
    return (f"  backward: {nodes}; tensors at most {human_bytes(s['backward_peak_bytes'])} "
            f"during backward (step {s['backward_peak_step']})")


def _saved_head(d) -> str:
    return f"  saved for backward in {training_step_words(d.call, d.calls)}:" if d.several else "  saved for backward:"


def _ground_lines(s: dict) -> list[str]:
    lines = []
    a = s.allocator or {}
    if a.get("source"):
        check = ("tracked + unattributed = allocator after every step" if a["agrees"]
                 else f"tracked + unattributed differs from the allocator by up to {human_bytes(a['max_mismatch_bytes'])}")
        most = a.get("unattributed_max_bytes") or 0
        after = (f"most scratch left after a step: {human_bytes(most)} (step {a['unattributed_max_step']}); "
                 if most else "no scratch outlived its step; ")
        lines.append(f"  allocator check: {after}{check}")
        blocks = a.get("unattributed_blocks") or []
        if blocks:
            b = blocks[0]
            freed = ("freed in the same step" if b["free_step"] == b["step"] else "still allocated at the end"
                     if b["free_step"] is None else f"freed at step {b['free_step']}")
            lines.append(f"  largest unattributed block: {human_bytes(b['nbytes'])} inside {b['op']} (step {b['step']}), "
                         f"{freed}: a buffer the kernel allocated itself (summary.json: allocator.unattributed_blocks)")
        if a.get("reserved_peak_bytes") is not None:
            lines.append(f"  reserved (CUDA pool): peak {human_bytes(a['reserved_peak_bytes'])}; "
                         f"reserved minus allocated at the peak: {human_bytes(a['reserved_gap_at_peak'] or 0)}")
    r = s.rss or {}
    if r:
        lines.append(f"  resident memory (RSS): {human_bytes(r['start_bytes'])} at start, peak {human_bytes(r['peak_bytes'])}, "
                     f"{human_bytes(r['end_bytes'])} at the end")
    return lines


def summary_text(analysis, files: list[Path] | None = None) -> str:
    s = analysis.summary
    status = "" if s["status"] == "complete" else f"  [{s['status'].upper()}]"
    lines = [
        f"gradmem: {ESTIMATE + ': ' if s.get('estimate') else ''}{s['scenario'] or 'capture'} on {s['device']} "
        f"(torch {s['torch_version']}){status}",
        *_peak_lines(s),
        *_scratch_lines(s),
        *_module_lines(s),
        *_ground_lines(s),
        _backward_line(s),
        _saved_head(analysis.answer_facts.described),
        *(_saved_lines(analysis.answer_facts.saved) or ["    nothing"]),
        "  largest tensors:",
        *[f"    {t['name']} {t['shape']} {human_bytes(t['nbytes'])} [{t['role']}]" for t in s.largest[:TOP]],
        f"  alive at the end: {_roles(s.bytes_by_role_at_end)}",
    ]
    lines += _allocator_lines(s.get("cuda_allocator"))
    if s.get("capture_engine") == "native":   # the Python engine, when auto fell back to it, is a note below
        lines.append(f"  captured by the native engine ({s['engine_reason']})")
    lines += [f"  note: {n}" for n in s["notes"]]
    if s.get("error"):
        e = s["error"]
        lines.append(f"  stopped by {e['type']} at {where(str(e.get('file') or 'the scenario'), e.get('line'))}: {e['message']}")
    if files:
        lines.append(f"  wrote {files[0].parent}/: " + " ".join(f.name for f in files))
    return "\n".join(lines)
