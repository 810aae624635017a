"""The plain-language answer at the top of report.html, written from the measurements.

Returns sections of plain text; names are wrapped in backticks, which the page shows as
code after escaping. Small tensors carry their values, so the seed examples read like a
worked solution. Imports no torch.
"""
from __future__ import annotations

import pandas as pd

from .units import human_bytes

MAX_LINES = 10
_NONE = pd.DataFrame({"name": [], "role": []})   # a node step that freed nothing


def _value(row) -> str:
    return f" = {row['value']}" if isinstance(row["value"], str) and row["value"] else ""


def _made(row) -> str:
    """'`torch.tensor(...)` at line 20 of x.py' or '`mv`': the call as code, the place as words."""
    made = row.get("made_at") if isinstance(row.get("made_at"), str) else row["created_by"]
    call, sep, where = made.partition(" at line ")
    return f"`{call}`" + (f" at line {where}" if sep else "")


def _names(rows: pd.DataFrame, limit: int = MAX_LINES) -> str:
    names = [f"`{n}`" for n in rows["name"].head(limit)]
    more = len(rows) - limit
    return ", ".join(names) + (f" and {more:,} more" if more > 0 else "")


def _more(lines: list[str], total: int, where: str) -> list[str]:
    if total > len(lines):
        lines.append(f"... and {total - len(lines):,} more: {where}.")
    return lines


def saved_section(f) -> dict:
    saved = f.saved
    lines = []
    for r in saved.head(MAX_LINES).to_dict("records"):
        cost = {"input": " (an input: saving it cost no new bytes)",
                "parameter": " (a parameter: saving it cost no new bytes)"}.get(r["role"], "")
        used = f", unpacked by {r['unpacked_by']}" if r["unpacked_by"] else ", never unpacked"
        lines.append(f"`{r['name']}` {r['shape']} {human_bytes(r['nbytes'])}{_value(r)}, made by {_made(r)}, "
                     f"saved for {r['saved_by']}{cost}{used}.")
    _more(lines, len(saved), "see the lifetimes and tensors.csv")
    head = (f"Autograd saved {len(saved):,} tensor(s) for backward; {human_bytes(f.new_saved_bytes)} of them was "
            f"new memory (activations).") if len(saved) else "Autograd saved no tensor for backward."
    unsaved = f.intermediates
    if len(unsaved):
        lines.append(f"Not saved: {_names(unsaved)}. Backward never needed their values.")
    return {"head": head, "lines": lines}


def peak_section(analysis) -> dict:
    s, before, made = analysis.summary, analysis.at_peak.before_bytes, analysis.at_peak.made
    step = s.peak_step   # the true peak: the allocator's when its record is on
    head = f"The peak: {human_bytes(s.peak_bytes)} at step {step}, during `{s.peak_op}` ({s.peak_phase})"
    scratch = s.peak_by_role.get("unattributed", 0)
    head += (f", {human_bytes(scratch)} of it kernel scratch that no tensor explains (the allocator's record)."
             if scratch else ".")
    # what follows is the tracked tensors' own peak (analysis.at_peak), which the chart marks
    lines = [f"Tensors alone peaked at {human_bytes(s.tracked_peak_bytes)} at step {s.tracked_peak_step}."] * (
        s.peak_source == "allocator")
    lines += [f"{human_bytes(before)} were live before that step; it added "
              + ", ".join(f"`{r['name']}` {human_bytes(r['nbytes'])} ({r['role']})"
                          for r in made.head(MAX_LINES).to_dict("records")) + "."] if len(made) else []
    roles = sorted(((b, r) for r, b in s.tracked_peak_by_role.items() if b), reverse=True)
    lines.append("Live at that moment, by role: " + ", ".join(f"{r} {human_bytes(b)}" for b, r in roles) + ".")
    return {"head": head, "lines": lines}


def _node_line(row: dict, freed_at: dict) -> str:
    freed = freed_at.get(int(row["step"]), _NONE)
    parts = [f"`{n}` ({r})" for n, r in zip(freed["name"].head(MAX_LINES), freed["role"])]
    text = f"After `{row['name']}` (step {row['step']}): "
    text += ("freed " + ", ".join(parts)) if parts else "freed nothing"
    if row["released"]:
        text += "; released the saved slot of " + ", ".join(f"`{n}`" for n in row["released"].split(";"))
    return text + "."


def freed_section(analysis) -> dict:
    f, nodes = analysis.answer_facts, analysis.nodes
    grads = f.gradients
    head = (f"{int(grads['freed_promptly'].sum()):,} of {len(grads):,} gradient(s) were freed right after the backward node that consumed them."
            if len(grads) else "Backward created no gradient that was handed between nodes.")
    late = grads[~grads["freed_promptly"].astype(bool)]
    lines = [f"`{r['name']}` was not: it lived until {_until(r)}." for r in late.head(MAX_LINES).to_dict("records")]
    lines += [_node_line(r, f.freed_at) for r in nodes.head(MAX_LINES).to_dict("records")]
    return {"head": head, "lines": _more(lines, len(nodes), "see the table \u201cwhat backward needs\u201d")}


def _until(row) -> str:
    return "the end" if pd.isna(row["free_step"]) else f"step {int(row['free_step'])} ({row['freed_after']})"


def held_section(f) -> dict:
    done = f.held
    lines = [f"`{r['name']}` ({human_bytes(r['nbytes'])}): backward was done with it after {r['unpacked_by'] or 'its node'} "
             f"(slot released at step {int(r['released_step'])}), yet it stayed until {_until(r)} "
             f"because the program still held it." for r in done.head(MAX_LINES).to_dict("records")]
    _more(lines, len(done), "see the lifetimes")
    inter = f.intermediates
    if len(inter):
        lines.append(f"{_names(inter)} ({human_bytes(inter['nbytes'].sum())}): never needed by backward, "
                     f"alive only while the program held them.")
    head = "Kept only because the program held a reference:" if lines else "Nothing was kept only by the program."
    return {"head": head, "lines": lines}


def retained_section(f) -> dict:
    kept = f.retained
    lines = [f"`{r['name']}` {r['shape']} {human_bytes(r['nbytes'])}{_value(r)}, kept until {_until(r)}."
             for r in kept.head(MAX_LINES).to_dict("records")]
    _more(lines, len(kept), "see tensors.csv (role retained_grad)")
    for r in f.param_grads.head(MAX_LINES).to_dict("records"):
        lines.append(f"`{r['name']}` {r['shape']} {human_bytes(r['nbytes'])}{_value(r)} is a leaf's gradient "
                     f"(param_grad): backward leaves it for the optimizer.")
    head = (f"retain_grad() kept {len(kept):,} extra cop{'y' if len(kept) == 1 else 'ies'}, "
            f"{human_bytes(kept['nbytes'].sum())} in all." if len(kept) else "retain_grad() kept nothing.")
    return {"head": head, "lines": lines}


def answer(analysis) -> list[dict]:
    """Sections {head, lines} in reading order, from ``analysis.answer_facts``."""
    f = analysis.answer_facts
    return [saved_section(f), peak_section(analysis), freed_section(analysis), held_section(f), retained_section(f)]
