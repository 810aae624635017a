"""The plain-language answer at the top of report.html, written from the measurements.

Returns sections of plain text; names are wrapped in backticks, which the page shows as
code after escaping. Small tensors carry their values, so the seed examples read like a
worked solution. Imports no torch.
"""
from __future__ import annotations

import pandas as pd

from ..analysis.timeline import live_at
from .units import human_bytes, step_label

MAX_LINES = 10


def _value(row) -> str:
    return f" = {row['value']}" if isinstance(row["value"], str) and row["value"] else ""


def _names(rows: pd.DataFrame, limit: int = MAX_LINES) -> str:
    names = [f"`{n}`" for n in rows["name"].head(limit)]
    more = len(rows) - limit
    return ", ".join(names) + (f" and {more:,} more" if more > 0 else "")


def _more(lines: list[str], total: int, where: str) -> list[str]:
    if total > len(lines):
        lines.append(f"... and {total - len(lines):,} more: {where}.")
    return lines


def saved_section(t: pd.DataFrame) -> dict:
    saved = t[t["saved_by"] != ""].sort_values("alloc_seq")
    lines = []
    for r in saved.head(MAX_LINES).to_dict("records"):
        cost = {"input": " (an input: saving it cost no new bytes)",
                "parameter": " (a parameter: saving it cost no new bytes)"}.get(r["role"], "")
        used = f", unpacked by {r['unpacked_by']}" if r["unpacked_by"] else ", never unpacked"
        lines.append(f"`{r['name']}` {r['shape']} {human_bytes(r['nbytes'])}{_value(r)}, made by `{r['created_by']}`, "
                     f"saved for {r['saved_by']}{cost}{used}.")
    _more(lines, len(saved), "see the lifetimes and tensors.csv")
    new = saved[saved["role"] == "activation"]["nbytes"].sum()
    head = (f"Autograd saved {len(saved):,} tensor(s) for backward; {human_bytes(new)} of them was new memory "
            f"(activations).") if len(saved) else "Autograd saved no tensor for backward."
    unsaved = t[t["role"] == "intermediate"].sort_values("alloc_seq")
    if len(unsaved):
        lines.append(f"Not saved: {_names(unsaved)}. Backward never needed their values.")
    return {"head": head, "lines": lines}


def peak_section(analysis, peak_seq: int) -> dict:
    s, t, steps = analysis.summary, analysis.tensors, analysis.steps.set_index("step")
    step = s["peak_step"]
    before = int(steps["live_bytes"].shift(1).fillna(0).get(step, 0))
    live = live_at(t, peak_seq)
    made = live[live["alloc_step"] == step].sort_values("alloc_seq")
    head = f"The peak: {human_bytes(s['peak_bytes'])} at step {step}, during `{s['peak_op']}` ({s['peak_phase']})."
    lines = [f"{human_bytes(before)} were live before that step; it added "
             + ", ".join(f"`{r['name']}` {human_bytes(r['nbytes'])} ({r['role']})"
                         for r in made.head(MAX_LINES).to_dict("records")) + "."] if len(made) else []
    roles = sorted(((b, r) for r, b in s["peak_by_role"].items() if b), reverse=True)
    lines.append("Live at that moment, by role: " + ", ".join(f"{r} {human_bytes(b)}" for b, r in roles) + ".")
    return {"head": head, "lines": lines}


def _by_node(t: pd.DataFrame) -> pd.DataFrame:
    """Storages a node's run freed (not those its backward() call let go on returning)."""
    return t[~t["freed_after"].astype(str).str.endswith("() returned)")]


def _node_line(row: dict, t: pd.DataFrame) -> str:
    freed = t[t["free_step"] == row["step"]].sort_values("free_seq")
    parts = [f"`{n}` ({r})" for n, r in zip(freed["name"].head(MAX_LINES), freed["role"])]
    text = f"After `{row['name']}` (step {row['step']}): "
    text += ("freed " + ", ".join(parts)) if parts else "freed nothing"
    if row["released"]:
        text += "; released the saved slot of " + ", ".join(f"`{n}`" for n in row["released"].split(";"))
    return text + "."


def freed_section(analysis) -> dict:
    t, nodes = analysis.tensors, analysis.nodes
    grads = t[t["role"] == "gradient"]
    consumer_step = {}
    for step, ins in zip(nodes["step"], nodes["grads_in"]):
        for name in (ins or "").split(";"):
            consumer_step.setdefault(name, step)
    prompt = [pd.notna(f) and consumer_step.get(n) == f for n, f in zip(grads["name"], grads["free_step"])]
    head = (f"{sum(prompt):,} of {len(grads):,} gradient(s) were freed right after the backward node that consumed them."
            if len(grads) else "Backward created no gradient that was handed between nodes.")
    late = grads[[not p for p in prompt]]
    lines = [f"`{r['name']}` was not: it lived until {_until(r)}." for r in late.head(MAX_LINES).to_dict("records")]
    by_node = _by_node(t)
    lines += [_node_line(r, by_node) for r in nodes.head(MAX_LINES).to_dict("records")]
    _more(lines, len(late) + len(nodes), "see the table \u201cwhat backward needs\u201d")
    return {"head": head, "lines": lines + _returned_lines(t)}


def _returned_lines(t: pd.DataFrame) -> list[str]:
    """'When backward() returned (end of step 13): freed `grad(loss)` (gradient).'"""
    freed = t[t["freed_after"].astype(str).str.endswith("() returned)")].sort_values("free_seq")
    out = []
    for (call, step), rows in freed.groupby(["freed_after", "free_step"], sort=False):
        names = ", ".join(f"`{n}` ({r})" for n, r in zip(rows["name"].head(MAX_LINES), rows["role"]))
        out.append(f"When {call[1:-1]} (end of step {int(step)}): freed {names}.")
    return out


def _until(row) -> str:
    return "the end" if pd.isna(row["free_step"]) else step_label(row["free_step"], row["freed_after"])


def held_section(t: pd.DataFrame) -> dict:
    done = t[(t["saved_by"] != "") & t["released_step"].notna() & ~t["role"].isin(["input", "parameter"])]
    done = done[done["free_step"].isna() | (done["free_step"] > done["released_step"])]
    lines = [f"`{r['name']}` ({human_bytes(r['nbytes'])}): backward was done with it after {r['unpacked_by'] or 'its node'} "
             f"(slot released at step {int(r['released_step'])}), yet it stayed until {_until(r)} "
             f"because the program still held it." for r in done.head(MAX_LINES).to_dict("records")]
    _more(lines, len(done), "see the lifetimes")
    inter = t[t["role"] == "intermediate"]
    if len(inter):
        lines.append(f"{_names(inter)} ({human_bytes(inter['nbytes'].sum())}): never needed by backward, "
                     f"alive only while the program held them.")
    head = "Kept only because the program held a reference:" if lines else "Nothing was kept only by the program."
    return {"head": head, "lines": lines}


def retained_section(t: pd.DataFrame) -> dict:
    kept = t[t["role"] == "retained_grad"].sort_values("alloc_seq")
    lines = [f"`{r['name']}` {r['shape']} {human_bytes(r['nbytes'])}{_value(r)}, kept until {_until(r)}."
             for r in kept.head(MAX_LINES).to_dict("records")]
    _more(lines, len(kept), "see tensors.csv (role retained_grad)")
    for r in t[t["role"] == "param_grad"].sort_values("alloc_seq").head(MAX_LINES).to_dict("records"):
        lines.append(f"`{r['name']}` {r['shape']} {human_bytes(r['nbytes'])}{_value(r)} is a leaf's gradient "
                     f"(param_grad): backward leaves it for the optimizer.")
    head = (f"retain_grad() kept {len(kept):,} extra cop{'y' if len(kept) == 1 else 'ies'}, "
            f"{human_bytes(kept['nbytes'].sum())} in all." if len(kept) else "retain_grad() kept nothing.")
    return {"head": head, "lines": lines}


def answer(analysis, peak_seq: int) -> list[dict]:
    """Sections {head, lines} in reading order."""
    t = analysis.tensors
    return [saved_section(t), peak_section(analysis, peak_seq), freed_section(analysis),
            held_section(t), retained_section(t)]
