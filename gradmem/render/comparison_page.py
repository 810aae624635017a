"""comparison.html: two runs on one page. ``comparison_page_data(c)`` is the JSON-ready data
(the aligned steps in at most ``MAX_POINTS`` buckets, the tables, the answer); the writer
escapes it into the template, as report.html does. Imports no torch.
"""
from __future__ import annotations

import html
import math

import numpy as np
import pandas as pd

from ..roles import ROLE_COLORS, ROLE_MEANINGS, ROLE_ORDER
from ..version import __version__
from .comparison_answer import answer
from .html import answer_html, asset, fill_page, json_island
from .units import human_bytes
from ..files import COMPARISON_HTML

MAX_POINTS = 4000
MAX_ROWS = 500


def _roles(c) -> list[str]:
    used = lambda s: {r for r in ROLE_ORDER if (s[f"live_{r}"] != 0).any()}  # noqa: E731
    both = used(c.a.steps) | used(c.b.steps)
    return [r for r in ROLE_ORDER if r in both]


def _buckets(n: int, max_points: int) -> tuple[int, np.ndarray]:
    size = max(1, math.ceil(n / max_points))
    return size, np.arange(n) // size


def aligned_series(c, max_points: int = MAX_POINTS) -> dict:
    """Columnar buckets of aligned rows: each run's live bytes by role after the bucket and
    highest inside it, and the difference (b - a) after it, lowest and highest inside it."""
    al, roles = c.aligned, _roles(c)
    size, bucket = _buckets(len(al), max_points)
    cols = {"x0": al["row"], "x1": al["row"], "hi_a": al["hi_a"], "hi_b": al["hi_b"],
            "diff": al["diff"], "dlo": al["diff"], "dhi": al["diff"]}
    for side, steps in (("a", c.a.steps), ("b", c.b.steps)):
        for r in roles:
            cols[f"{side}:{r}"] = steps[f"live_{r}"].to_numpy()[al[f"pos_{side}"].to_numpy()]
    frame = pd.DataFrame(cols).assign(bucket=bucket)
    how = {"x0": "first", "x1": "last", "hi_a": "max", "hi_b": "max", "diff": "last", "dlo": "min", "dhi": "max",
           **{k: "last" for k in cols if ":" in k}}
    g = frame.groupby("bucket").agg(how)
    out = {"bucket_rows": size, **{k: g[k].astype("int64").tolist() for k in ("x0", "x1", "hi_a", "hi_b", "diff", "dlo", "dhi")}}
    out["by_role"] = {side: {r: g[f"{side}:{r}"].astype("int64").tolist() for r in roles} for side in ("a", "b")}
    if size == 1:
        out["rows"] = {k: _plain_list(al[k]) for k in ("step_a", "step_b", "op_a", "op_b", "phase_a", "phase_b")}
        for side, steps in (("a", c.a.steps), ("b", c.b.steps)):   # rows that ran a backward node: ticks
            is_node = steps["node"].notna().to_numpy()[al[f"pos_{side}"].to_numpy()]
            out["rows"][f"node_{side}"] = [bool(n) and s is not None for n, s in zip(is_node, out["rows"][f"step_{side}"])]
    return out


def _plain_list(s: pd.Series) -> list:
    return [None if pd.isna(v) else (v.item() if hasattr(v, "item") else v) for v in s]


def _records(frame: pd.DataFrame, limit: int = MAX_ROWS) -> list[dict]:
    return [{k: _plain_list(pd.Series([v]))[0] for k, v in row.items()} for row in frame.head(limit).to_dict("records")]


def comparison_page_data(c) -> dict:
    a, b = c.labels
    return {
        "title": f"{a} vs {b}",
        "labels": [a, b],
        "runs": [_run(a, c.a), _run(b, c.b)],
        "answer": answer(c),
        "headline": c.headline,
        "roles": [{"role": r, "color": ROLE_COLORS[r], "meaning": ROLE_MEANINGS[r]} for r in _roles(c)],
        "series": aligned_series(c),
        "role_table": _records(c.roles),
        "extra": _records(c.extra), "extra_total": int(len(c.extra)),
        "moved": _records(c.moved), "moved_total": int(len(c.moved)),
        "differ_most": _records(c.differ_most),
    }


def _run(label: str, analysis) -> dict:
    s = analysis.summary
    return {"label": label, "scenario": s.scenario, "params": s.params, "device": s.device,
            "status": s.status, "peak_bytes": s.peak_bytes, "peak_step": s.peak_step, "steps": s.steps,
            "tracked_peak_bytes": s.tracked_peak_bytes}


def _tensors_alone(r: dict) -> str:
    """Where the allocator's peak holds kernel scratch, the tensors' own (what the charts draw)."""
    t = r.get("tracked_peak_bytes")
    return "" if t is None or t == r["peak_bytes"] else f" (tensors alone {human_bytes(t)})"


def meta_html(runs: list[dict]) -> str:
    def one(r):
        params = ", ".join(f"{k}={v}" for k, v in (r.get("params") or {}).items())
        return (f"{r['label']}: {r['scenario'] or 'capture'}" + (f" ({params})" if params else "")
                + f", {r['device']}, {r['status']}, peak {human_bytes(r['peak_bytes'])} at step {r['peak_step']}"
                + _tensors_alone(r))
    return html.escape(" · ".join(one(r) for r in runs))


class ComparisonHtmlWriter:
    filename = COMPARISON_HTML

    def render(self, c) -> str:
        data = comparison_page_data(c)
        fill = {
            "heading": html.escape(f"gradmem compare: {data['title']}"), "meta": meta_html(data["runs"]),
            "notes": "", "version": html.escape(__version__), "answer": answer_html(data["answer"]),
            "label_a": html.escape(c.labels[0]), "label_b": html.escape(c.labels[1]),
            "css": asset("report.css") + asset("compare.css"), "js": asset("common.js") + asset("compare.js"),
            "data": json_island(data),
        }
        return fill_page("compare.html", fill)
