"""The short summary printed after every run."""
from __future__ import annotations

from pathlib import Path

from .units import human_bytes

TOP = 5


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


def _allocator_lines(est: dict | None) -> list[str]:
    if not est:
        return []
    return [f"  CUDA caching allocator (a model of its rounding): peak allocated {human_bytes(est['allocated_peak_bytes'])}, "
            f"peak reserved {human_bytes(est['reserved_peak_bytes'])} (tensor bytes above are exact storage sizes)"]


def _ground_lines(s) -> list[str]:
    lines = []
    a = s.allocator or {}
    if a.get("source"):
        check = ("tracked + unattributed = allocator after every step" if a["agrees"]
                 else f"tracked + unattributed differs from the allocator by up to {human_bytes(a['max_mismatch_bytes'])}")
        lines.append(f"  allocator: peak {human_bytes(a['peak_bytes'])} at step {a['peak_step']}, {a['peak_op']}; "
                     f"unattributed {human_bytes(a['unattributed_at_peak'])} at that moment, after a step at most "
                     f"{human_bytes(a['unattributed_max_bytes'])} (step {a['unattributed_max_step']}); {check}")
        blocks = a.get("unattributed_blocks") or []
        if blocks:
            b = blocks[0]
            freed = "freed in the same step" if b["free_step"] == b["step"] else f"freed at step {b['free_step']}"
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


def _peak_line(s) -> str:
    """The true peak first: the allocator's when its record is on, with the kernel scratch
    in it; the tracked tensors' own peak after it."""
    line = f"  peak: {human_bytes(s.peak_bytes)} at step {s.peak_step}, {s.peak_op} ({s.peak_phase})"
    if s.peak_source != "allocator":
        return line
    scratch = s.peak_by_role.get("unattributed", 0)
    return (line + f", allocator's record: {human_bytes(scratch)} of it kernel scratch no tensor explains; "
            f"tracked tensors alone peak at {human_bytes(s.tracked_peak_bytes)} (step {s.tracked_peak_step})")


def _scratch_lines(s) -> list[str]:
    nodes = s.unattributed_by_node
    if not nodes:
        return []
    parts = [f"{n['op']} {human_bytes(n['max_bytes'])}" + (f" ({n['calls']} calls)" if n["calls"] > 1 else "")
             for n in nodes[:3]]
    more = f", and {len(nodes) - 3} more" if len(nodes) > 3 else ""
    return [f"  kernel scratch by node (most in one call): {', '.join(parts)}{more}"]


def summary_text(analysis, files: list[Path] | None = None) -> str:
    s = analysis.summary
    status = "" if s.status == "complete" else f"  [{s.status.upper()}]"
    status += "  [ESTIMATE: fake tensors, nothing allocated]" if s.estimate else ""
    lines = [
        f"gradmem: {s.scenario or 'capture'} on {s.device} (torch {s.torch_version}){status}",
        _peak_line(s),
        f"  live at the peak: {_roles(s.peak_by_role)}",
        *_scratch_lines(s),
        *_ground_lines(s),
        f"  backward: {s.backward_nodes} nodes; its peak {human_bytes(s.backward_peak_bytes)} at step {s.backward_peak_step}",
        "  saved for backward:",
        *(_saved_lines(analysis.tensors) or ["    nothing"]),
        "  largest tensors:",
        *[f"    {t['name']} {t['shape']} {human_bytes(t['nbytes'])} [{t['role']}]" for t in s.largest[:TOP]],
        f"  alive at the end: {_roles(s.bytes_by_role_at_end)}",
    ]
    lines += _allocator_lines(s.cuda_allocator)
    lines += [f"  note: {n}" for n in s.notes]
    if s.error:
        e = s.error
        lines.append(f"  stopped by {e['type']} at {e.get('file')}:{e.get('line')}: {e['message']}")
    if files:
        lines.append(f"  wrote {files[0].parent}/: " + " ".join(f.name for f in files))
    return "\n".join(lines)
