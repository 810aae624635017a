"""report.html of a multi-process run: ``ranks_page_data(result)`` is the JSON-ready data
(each rank's lane, the envelope, the anchors of the logical clock, the ranks table and the
answer); the writer escapes it into ``assets/ranks.html`` as report.html does. Imports no
torch.
"""
from __future__ import annotations

import html
import math

from ..version import __version__
from .html import answer_html, asset, fill_page, json_island
from .units import human_bytes
from ..files import REPORT

LANE_COLORS = ["#4e79a7", "#e15759", "#59a14f", "#f28e2b", "#b07aa1", "#76b7b2", "#edc948", "#9c755f"]


def _num(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return v.item() if hasattr(v, "item") else v


def _rows(result) -> list[dict]:
    return [{k: _num(v) for k, v in row.items()} for row in result.ranks.to_dict("records")]


def why_lines(why: dict | None) -> list[str]:
    """The plain answer: why the worst rank differs from the median rank, line by line."""
    if not why:
        return []
    k, m, a, b = why["rank"], why["median_rank"], why["at_rank"], why["at_median"]
    lines = [f"rank {k} peaks at {human_bytes(a['peak_bytes'])} (step {a['peak_step']}, {a['peak_op']}, {a['peak_phase']}), "
             f"{human_bytes(abs(why['gap']))} {'above' if why['gap'] >= 0 else 'below'} rank {m}, the median rank "
             f"({human_bytes(b['peak_bytes'])} at step {b['peak_step']}, {b['peak_op']})."]
    for d in why["roles"]:
        sign = "+" if d["diff"] > 0 else "-"
        line = (f"{d['role']}: {sign}{human_bytes(abs(d['diff']))} on rank {k} at its peak "
                f"({human_bytes(d['bytes'])} against {human_bytes(d['median_bytes'])} on rank {m})")
        parts = [f"`{s['name']}` {s['shape']} {human_bytes(s['nbytes'])} ("
                 + (f"{s['median_shape']} {human_bytes(s['median_nbytes'])} on rank {m}" if s["median_shape"] else f"none on rank {m}")
                 + ")" for s in d["storages"]]
        lines.append(line + (": " + "; ".join(parts) if parts else ""))
    if not why["roles"]:
        lines.append("at their peaks both ranks hold the same bytes in every role.")
    return lines


def answer_sections(result) -> list[dict]:
    r = result.ranks.set_index("rank")
    first = []
    if result.worst is not None:
        w = r.loc[result.worst]
        first.append(f"rank {result.worst} has the highest peak: {human_bytes(w['peak_bytes'])} at step "
                     f"{int(w['peak_step'])} (`{w['peak_op']}`, {w['peak_phase']}).")
    if result.least_headroom is not None:
        h = r.loc[result.least_headroom]
        first.append(f"rank {result.least_headroom} has the least headroom: {human_bytes(h['headroom_bytes'])} left of "
                     f"{human_bytes(h['capacity_bytes'])} ({h['device']}"
                     + ("; the ranks of a CPU host share its memory, so their peaks are added" if str(h["device"]).startswith("cpu") else "")
                     + ").")
    sections = [{"head": "Which rank runs out first?", "lines": first or ["no rank wrote a report."]}]
    if result.why:
        sections.append({"head": f"Why rank {result.why['rank']} differs from the median rank ({result.why['median_rank']})",
                         "lines": why_lines(result.why)})
    elif result.worst is not None:
        sections.append({"head": "How the ranks differ", "lines": ["every rank that reported peaks at the same bytes as the median rank."]})
    return sections


def ranks_page_data(result) -> dict:
    lanes = {}
    for r, l in result.lanes.items():
        lanes[str(r)] = {"x": [round(float(x), 4) for x in l["x"]], "y": l["peak_bytes"].astype("int64").tolist(),
                         "step": l["step"].astype("int64").tolist(), "op": l["op"].tolist()}
    e = result.envelope
    return {
        "title": f"{result.scenario or 'capture'} on {result.world_size} ranks",
        "ranks": _rows(result), "lanes": lanes,
        "colors": {str(r): LANE_COLORS[r % len(LANE_COLORS)] for r in range(result.world_size)},
        "envelope": {k: [None if v != v else float(v) for v in e[k]] for k in ("x", "min", "median", "max")},
        "anchors": result.anchors, "worst": result.worst, "least_headroom": result.least_headroom,
        "median_rank": result.median_rank, "notes": result.notes,
    }


def meta_html(result) -> str:
    first = next(iter(result.analyses.values()), None)
    d = (first.trace.meta.distributed or {}) if first else {}
    params = ", ".join(f"{k}={v}" for k, v in ((first.summary.get("params") or {}) if first else {}).items())
    bits = [f"{result.world_size} ranks", f"backend {d.get('backend') or '?'}",
            f"device {first.summary['device'] if first else '?'}", f"torch {first.summary['torch_version'] if first else '?'}"]
    if params:
        bits.insert(0, f"params {params}")
    return html.escape(" · ".join(bits))


def notes_html(result) -> str:
    if not result.notes:
        return ""
    return "<ul class=\"notes\">" + "".join(f"<li>{html.escape(n)}</li>" for n in result.notes) + "</ul>"


class RanksHtmlWriter:
    filename = REPORT

    def render(self, result) -> str:
        data = ranks_page_data(result)
        fill = {"heading": html.escape(f"gradmem: {data['title']}"), "meta": meta_html(result), "notes": notes_html(result),
                "answer": answer_html(answer_sections(result)), "version": html.escape(__version__),
                "css": asset("report.css") + asset("ranks.css"), "js": asset("common.js") + asset("ranks.js"),
                "data": json_island(data)}
        return fill_page("ranks.html", fill)
