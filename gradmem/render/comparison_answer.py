"""The plain answer of a comparison, as on comparison.html and in the terminal: sections of
text made from ``Comparison.headline`` and its tables. Imports no torch."""
from __future__ import annotations

import pandas as pd

from .units import human_bytes


def signed(n: int) -> str:
    return ("+" if n > 0 else "") + human_bytes(n) if n else "no change"


def _names(rows: list[dict], limit: int = 6) -> str:
    text = ", ".join(f"`{r['name']}` {human_bytes(r['nbytes'])}" for r in rows[:limit])
    return text + (f" and {len(rows) - limit} more" if len(rows) > limit else "")


def kept_line(h: dict) -> str:
    a, b = h["labels"]
    if not h["kept_count"]:
        return f"`{b}` kept nothing past the end of backward that `{a}` does not have."
    what = "gradients" if h["kept_roles"] == ["retained_grad"] else "storages"
    who = "retain_grad" if what == "gradients" else f"`{b}`"
    exact = f" ({h['kept_bytes']:,} B)" if h["kept_bytes"] >= 1024 else ""
    return (f"{who} kept {h['kept_count']} {what} alive until the end of backward: {signed(h['kept_bytes'])}{exact} "
            f"in `{b}` and not in `{a}`: {_names(h['kept'])}.")


def peak_line(h: dict) -> str:
    a, b = h["labels"]
    where = lambda s: f"{human_bytes(h['peak_' + s])} at step {h['peak_step_' + s]} ({h['peak_op_' + s]})"  # noqa: E731
    verb = "rose" if h["peak_diff"] > 0 else "fell" if h["peak_diff"] < 0 else "stayed"
    # the tracked tensors' peaks: the storages this comparison pairs up (kernel scratch is
    # no storage; each run's header gives its allocator peak)
    line = f"The tensors' peak {verb} from {where('a')} in `{a}` to {where('b')} in `{b}`: {signed(h['peak_diff'])}."
    extra = h["extra_at_peak_b"]
    if extra:
        line += f" At `{b}`'s peak, {len(extra)} storages that `{a}` does not have were alive ({_names(extra)}: {human_bytes(h['extra_at_peak_b_bytes'])})"
        rest = h["peak_diff"] - h["extra_at_peak_b_bytes"]
        if rest == 0:
            line += "; that is the whole difference."
        else:
            more = "more" if rest > 0 else "less"
            line += (f"; the storages both runs have add up to {human_bytes(abs(rest))} {more} there than at "
                     f"`{a}`'s peak (step {h['peak_step_a']}).")
    return line


def flow_lines(h: dict) -> list[str]:
    a, b = h["labels"]
    out = []
    for k in h["kept"]:
        if k["flow"] and k["flow_free_step"] is not None:
            until = "the end" if k["free_step"] is None else f"step {k['free_step']}"
            out.append(f"In `{a}`, {_flow_fate(k)}; in `{b}` its copy `{k['name']}` lives from step {k['alloc_step']} to {until}.")
    return out


def _flow_fate(k: dict) -> str:
    freed = f"`{k['flow_freed_after']}` (step {k['flow_free_step']})"
    if k["consumer_step"] == k["flow_free_step"]:
        return f"`{k['flow']}` was freed right after {freed}, the node that consumes it"
    fate = f"`{k['flow']}` was consumed by `{k['consumer']}` (step {k['consumer_step']}) but freed after {freed}"
    if k["flow_made_by"] == "ones_like":
        fate += " (the gradient backward() starts from: the call holds it until it returns)"
    return fate


def step_lines(c) -> list[str]:
    a, b = c.labels
    rows = [f"step {r.step_b if pd.notna(r.step_b) else r.step_a} "
            f"{r.op_b or r.op_a}: {signed(int(r.diff))} ({human_bytes(r.live_a)} vs {human_bytes(r.live_b)})"
            for r in c.differ_most.itertuples()]
    h = c.headline
    out = [f"Steps that differ most (`{b}` minus `{a}`, live bytes after the step): " + "; ".join(rows) + "."] if rows else \
        ["Live bytes are the same after every step."]
    if not h["same_steps"]:
        out.append(f"{h['unmatched_steps_a']} steps of `{a}` and {h['unmatched_steps_b']} of `{b}` have no counterpart in the other run.")
    return out


def moved_lines(c, limit: int = 5) -> list[str]:
    a, b = c.labels
    def when(r, s):
        free = getattr(r, f"free_step_{s}")
        return "alive at the end" if pd.isna(free) else f"freed after {getattr(r, f'freed_after_{s}')} (step {int(free)})"
    out = [f"`{r.name}` {human_bytes(r.nbytes)}: {r.role_a}, {when(r, 'a')} in `{a}`; {r.role_b}, {when(r, 'b')} in `{b}`."
           for r in c.moved.head(limit).itertuples()]
    if len(c.moved) > limit:
        out.append(f"... and {len(c.moved) - limit} more.")
    return out


def answer(c) -> list[dict]:
    """Sections {head, lines} of the plain answer, as on the report page."""
    h = c.headline
    a, b = c.labels
    end = f"After backward: {human_bytes(h['end_a'])} live in `{a}`, {human_bytes(h['end_b'])} in `{b}` ({signed(h['end_diff'])})."
    sections = [{"head": kept_line(h), "lines": [peak_line(h), end, *flow_lines(h)]},
                {"head": "Where the runs differ", "lines": step_lines(c)}]
    if len(c.moved):
        sections.append({"head": "Same storages, other lifetimes", "lines": moved_lines(c)})
    return sections
