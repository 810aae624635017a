"""What a capture shows in Jupyter: an HTML view and the text summary (no torch).

When an ``html`` report format exists, the full report page is embedded in an iframe
(``srcdoc``, escaped, so the page's own scripts and styles stay inside it). Until then,
a summary built from the analysis: the peak and the bytes by role, the saved tensors,
and the per-node table.
"""
from __future__ import annotations

import html

import pandas as pd

from . import FORMATS
from .terminal import summary_text
from .units import human_bytes

SAVED_COLUMNS = ["name", "role", "shape", "nbytes", "saved_by", "unpacked_by", "released_step", "free_step", "value"]
NODE_COLUMNS = ["step", "name", "unpacked", "grads_in", "grads_out", "freed", "live_after", "peak_bytes"]
IFRAME_HEIGHT = 720


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, na_rep="", border=0, classes="gradmem-table")


def peak_table(summary) -> str:
    rows = [("peak", f"{human_bytes(summary.peak_bytes)} at step {summary.peak_step}, "
                     f"{summary.peak_op} ({summary.peak_phase})")]
    rows += [(f"live at the peak: {role}", human_bytes(b)) for role, b in summary.peak_by_role.items() if b]
    rows.append(("backward", f"{summary.backward_nodes} nodes; its peak "
                             f"{human_bytes(summary.backward_peak_bytes)} at step {summary.backward_peak_step}"))
    return _table(pd.DataFrame(rows, columns=["", "value"]))


def summary_html(analysis) -> str:
    s = analysis.summary
    saved = analysis.tensors[analysis.tensors["saved_by"] != ""][SAVED_COLUMNS]
    title = f"gradmem: {s.scenario or 'capture'} on {s.device}"
    status = "" if s.status == "complete" else f" [{s.status}]"
    notes = "".join(f"<p>note: {html.escape(n)}</p>" for n in s.notes)
    return (f'<div class="gradmem-report"><h4>{html.escape(title + status)}</h4>{notes}'
            f"{peak_table(s)}<h5>Saved for backward</h5>{_table(saved)}"
            f"<h5>Backward nodes</h5>{_table(analysis.nodes[NODE_COLUMNS])}</div>")


def iframe(page: str, height: int = IFRAME_HEIGHT) -> str:
    """A whole HTML page embedded inline; ``srcdoc`` is escaped so the page cannot leak out."""
    return (f'<iframe srcdoc="{html.escape(page, quote=True)}" style="width: 100%; height: {height}px; '
            f'border: 0" sandbox="allow-scripts"></iframe>')


def report_html(analysis) -> str:
    writers = FORMATS.get("html")
    if writers:
        return iframe(writers[0].render(analysis))
    return summary_html(analysis)


def mimebundle(analysis) -> dict:
    return {"text/plain": summary_text(analysis), "text/html": report_html(analysis)}
