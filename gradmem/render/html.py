"""report.html: one self-contained page. The data comes from ``page_data``; this module only
escapes it and fills the template in ``assets/`` (hand-written HTML, CSS and JS, inlined).

Every name from the scenario reaches the page either HTML-escaped here or as text set by
the script (``textContent``); the data island is JSON with ``<``, ``>``, ``&``, U+2028 and
U+2029 written as ``\\u`` escapes, so nothing in it can close the script element.
"""
from __future__ import annotations

import html
import json
import re
from importlib import resources

from ..errors import where
from ..roles import PHASE_COLORS
from .page_data import page_data
from .terminal import ESTIMATE
from .units import human_bytes
from ..files import REPORT

MARKER = re.compile(r"<!--gradmem:(\w+)-->")


def asset(name: str) -> str:
    text = resources.files("gradmem.render").joinpath("assets", name).read_text(encoding="utf-8")
    # the phase colours live beside the phases (gradmem/roles.py), not in the script
    return text.replace("/*gradmem:phase-colors*/{}", json.dumps(PHASE_COLORS)) if name == "common.js" else text


def fill_page(body: str, fill: dict) -> str:
    """The page frame (assets/frame.html: the offline CSP, header, footer, data island and
    script) around the ``body`` asset, every marker filled in one pass, so text put in by
    one marker is never searched for another."""
    template = asset("frame.html").replace("<!--gradmem:body-->", asset(body))
    return MARKER.sub(lambda m: fill[m.group(1)], template)


def json_island(data) -> str:
    """JSON safe inside <script type="application/json">: no '<', '>' or '&' survive."""
    text = json.dumps(data, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def inline(text: str) -> str:
    """Escape, then show `name` as code."""
    return re.sub(r"`([^`]*)`", r"<code>\1</code>", html.escape(str(text)))


def answer_html(sections: list[dict]) -> str:
    parts = []
    for sec in sections:
        parts.append(f"<h3>{inline(sec['head'])}</h3>")
        if sec["lines"]:
            parts.append("<ul>" + "".join(f"<li>{inline(line)}</li>" for line in sec["lines"]) + "</ul>")
    return "\n".join(parts)


def meta_html(s) -> str:
    params = ", ".join(f"{k}={v}" for k, v in (s.params or {}).items())
    status = ("estimate from fake tensors" + ("" if s.status == "complete" else f", {s.status}")) if s.estimate else s.status
    bits = [f"device {s.device}", f"torch {s.torch_version}", f"status {status}",
            f"peak {human_bytes(s.peak_bytes)} at step {s.peak_step} ({s.peak_op})",
            f"{s.steps:,} steps, {s.backward_nodes:,} backward nodes, {s.storages:,} storages"]
    if params:
        bits.insert(0, f"params {params}")
    return html.escape(" · ".join(bits))


def notes_html(s) -> str:
    notes = list(s.notes or [])
    err = s.error
    if err:
        notes.append(f"stopped by {err.get('type')} at {where(str(err.get('file') or 'the scenario'), err.get('line'))}: "
                     f"{err.get('message')}")
    return ("<ul class=\"notes\">" + "".join(f"<li>{html.escape(str(n))}</li>" for n in notes) + "</ul>") if notes else ""


class HtmlWriter:
    filename = REPORT

    def render(self, analysis) -> str:
        data = page_data(analysis)
        s = analysis.summary
        fill = {
            "heading": html.escape(f"{ESTIMATE}: {data['title']}" if s.estimate else f"gradmem: {data['title']}"),
            "meta": meta_html(s), "notes": notes_html(s),
            "answer": answer_html(data["answer"]), "version": html.escape(str(s.gradmem_version or "")),
            "css": asset("report.css"), "js": asset("common.js") + asset("report.js"), "data": json_island(data),
        }
        return fill_page("page.html", fill)
