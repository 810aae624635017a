"""The plain-language answer at the top of report.html, written from the measurements.

Returns sections of plain text; names are wrapped in backticks, which the page shows as
code after escaping. Small tensors carry their values, so the seed examples read like a
worked solution. Imports no torch.
"""
from __future__ import annotations

import pandas as pd

from .units import human_bytes, step_label, training_step_words

MAX_LINES = 10


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


def in_step(d, sentence: str) -> str:
    """The sentence, opened by "In training step 2 of 3 (the peak's), " where backward ran
    more than once: what follows speaks of that step alone."""
    if not d.several:
        return sentence
    return f"In {training_step_words(d.call, d.calls)}, {sentence[:1].lower()}{sentence[1:]}"


def _at_once(total: int, at_once: int) -> str:
    return "" if at_once >= total else f", at most {human_bytes(at_once)} of it alive at once"


def _set_size(count: int, total: int, at_once: int) -> str:
    """The bytes of a set of storages as memory: a sum only where they all lived together."""
    if count == 1:
        return human_bytes(total)
    if at_once >= total:
        return f"{human_bytes(total)}, all alive at once"
    return f"at most {human_bytes(at_once)} of them alive at once"


def remade_line(f) -> list[str]:
    """Checkpoint's recompute: activations backward made again, which forward did not keep."""
    r = f.remade
    if not len(r):
        return []
    return [f"Backward ran checkpointed forward passes again and kept {len(r):,} activation(s) from them "
            f"({_set_size(len(r), int(r['nbytes'].sum()), f.remade_at_once)}); tensors.csv flags them recomputed."]


def step_lines(f) -> list[str]:
    if not f.described.several:
        return remade_line(f)
    return remade_line(f) + ["New memory saved for backward, per training step: "
            + ", ".join(f"step {k} {human_bytes(b)}" for k, b in sorted(f.new_saved_by_call.items()) if k > 0) + "."]


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
    head = in_step(f.described, f"Autograd saved {len(saved):,} tensor(s) for backward; "
                   f"{human_bytes(f.new_saved_bytes)} of them was new memory (activations)"
                   f"{_at_once(f.new_saved_bytes, f.new_saved_at_once)}." if len(saved) else
                   "Autograd saved no tensor for backward.")
    lines += step_lines(f)
    unsaved = f.intermediates
    if len(unsaved):
        lines.append(f"Not saved: {_names(unsaved)}. Backward never needed their values.")
    return {"head": head, "lines": lines}


OUTSIDE = "(outside any module)"


def _module(path: str) -> str:
    return f"`{path}`" if path else OUTSIDE


def modules_section(facts: dict) -> dict:
    """What forward saved for backward in one training step (the peak's), by module, largest
    first (the answer's lead on a model). The per-storage list stays in the tables."""
    step = (training_step_words(facts["backward"], facts["backward_calls"]) if facts["backward_calls"] > 1
            else "the training step")
    at_once = _at_once(facts["bytes"], facts.get("at_once_bytes", facts["bytes"]))
    head = (f"In {step}, forward saved {human_bytes(facts['bytes'])} of new memory for backward "
            f"({facts['count']:,} activation(s){at_once}), by module:") if facts["count"] else \
        f"In {step}, forward saved no new memory for backward (no activation)."
    lines = []
    for g in facts["modules"][:MAX_LINES]:
        top = ", ".join(f"`{t['name']}` {human_bytes(t['bytes'])}" for t in g["top"])
        kind = f" ({g['type']})" if g["type"] else ""
        lines.append(f"{_module(g['module'])}{kind}: {human_bytes(g['bytes'])} in {g['count']:,} tensor(s); largest {top}.")
    _more(lines, len(facts["modules"]), "see the module tree and modules.csv")
    free = facts["zero_cost"]
    if free:
        lines.append("Also saved, at no new cost (they existed already): "
                     + ", ".join(f"{n:,} {role}(s)" for role, n in free.items()) + ".")
    return {"head": head, "lines": lines}


def peak_modules_line(s: dict) -> list[str]:
    top = s.modules_at_peak
    if not top:
        return []
    return ["Modules holding the most at that moment (their own storages, parameters included): "
            + ", ".join(f"`{m['module']}` {human_bytes(m['bytes'])}" for m in top[:5]) + "."]


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
    return {"head": head, "lines": lines + peak_modules_line(s)}


def _node_line(row: dict, freed_at: dict) -> str:
    parts = [f"`{n}` ({r})" for n, r in freed_at.get(int(row["step"]), [])[:MAX_LINES]]
    text = f"After `{row['name']}` (step {row['step']}): "
    text += ("freed " + ", ".join(parts)) if parts else "freed nothing"
    if row["released"]:
        text += "; released the saved slot of " + ", ".join(f"`{n}`" for n in row["released"].split(";"))
    return text + "."


def freed_section(analysis, brief: bool = False) -> dict:
    """``brief`` (a model's run): only the nodes that freed something are listed."""
    f = analysis.answer_facts
    nodes, grads = f.nodes, f.gradients
    head = in_step(f.described, f"{int(grads['freed_promptly'].sum()):,} of {len(grads):,} gradient(s) were freed "
                   "right after the backward node that consumed them." if len(grads) else
                   "Backward created no gradient that was handed between nodes.")
    late = grads[~grads["freed_promptly"].astype(bool)]
    lines = [f"`{r['name']}` was not: it lived until {_until(r)}." for r in late.head(MAX_LINES).to_dict("records")]
    if brief:
        nodes = nodes[nodes["step"].isin([k for k, v in f.freed_at.items() if len(v)])]
    lines += [_node_line(r, f.freed_at) for r in nodes.head(MAX_LINES).to_dict("records")]
    _more(lines, len(late) + len(nodes), "see the table \u201cwhat backward needs\u201d")
    return {"head": head, "lines": lines + _returned_lines(f.freed_by_call)}


def _returned_lines(freed: pd.DataFrame) -> list[str]:
    """'When backward() returned (end of step 13): freed `grad(loss)` (gradient).'"""
    out = []
    for (call, step), rows in freed.groupby(["freed_after", "free_step"], sort=False):
        names = ", ".join(f"`{n}` ({r})" for n, r in zip(rows["name"].head(MAX_LINES), rows["role"]))
        out.append(f"When {call[1:-1]} (end of step {int(step)}): freed {names}.")
    return out


def _until(row) -> str:
    return "the end" if pd.isna(row["free_step"]) else step_label(row["free_step"], row["freed_after"])


def held_section(f) -> dict:
    done = f.held
    lines = [f"`{r['name']}` ({human_bytes(r['nbytes'])}): backward was done with it after {r['unpacked_by'] or 'its node'} "
             f"(slot released at step {int(r['released_step'])}), yet it stayed until {_until(r)} "
             f"because the program still held it." for r in done.head(MAX_LINES).to_dict("records")]
    _more(lines, len(done), "see the lifetimes")
    inter = f.intermediates
    if len(inter):
        size = _set_size(len(inter), int(inter["nbytes"].sum()), f.intermediates_at_once)
        lines.append(f"{_names(inter)} ({size}): never needed by backward, alive only while the program held them.")
    head = in_step(f.described, "Kept only because the program held a reference:" if lines else
                   "Nothing was kept only by the program.")
    return {"head": head, "lines": lines}


def retained_section(f) -> dict:
    kept = f.retained
    lines = [f"`{r['name']}` {r['shape']} {human_bytes(r['nbytes'])}{_value(r)}, kept until {_until(r)}."
             for r in kept.head(MAX_LINES).to_dict("records")]
    _more(lines, len(kept), "see tensors.csv (role retained_grad)")
    for r in f.param_grads.head(MAX_LINES).to_dict("records"):
        lines.append(f"`{r['name']}` {r['shape']} {human_bytes(r['nbytes'])}{_value(r)} is a leaf's gradient "
                     f"(param_grad): backward leaves it for the optimizer.")
    size = _set_size(len(kept), int(kept["nbytes"].sum()), f.retained_at_once)
    head = in_step(f.described, f"retain_grad() kept {len(kept):,} extra cop{'y' if len(kept) == 1 else 'ies'} ({size})."
                   if len(kept) else "retain_grad() kept nothing.")
    return {"head": head, "lines": lines}


def answer(analysis) -> list[dict]:
    """Sections {head, lines} in reading order, from ``analysis.answer_facts``. On a model
    (some nn.Module ran) the answer leads with what forward saved, by module, and lists
    only the backward nodes that freed something; the seed examples keep every line."""
    f = analysis.answer_facts
    by_module = analysis.summary.activations_by_module
    if by_module is None:
        return [saved_section(f), peak_section(analysis), freed_section(analysis), held_section(f), retained_section(f)]
    lead = modules_section(by_module)
    lead["lines"] += step_lines(f)
    return [lead, peak_section(analysis), freed_section(analysis, brief=True),
            held_section(f), retained_section(f)]
