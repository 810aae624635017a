"""The comparison of two runs: comparison.csv, the terminal summary, and the writer of a
comparison folder (the plain answer: comparison_answer.py; the page: comparison_page.py).
Formats what ``analysis.compare`` computed; imports no torch. Columns are documented in
docs/reports.md.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from . import check_target, write_atomic, write_marker
from .comparison_answer import answer, signed
from .comparison_page import ComparisonHtmlWriter
from ..files import COMPARISON_CSV, COMPARISON_HTML

__all__ = ["answer", "claim_folder", "comparison_csv", "signed", "summary_text", "write_comparison"]

CSV_COLUMNS = ["kind", "role", "peak_a", "peak_b", "peak_diff", "end_a", "end_b", "end_diff",
               "only_in", "storage", "name", "shape", "dtype", "nbytes", "created_by", "alloc_step",
               "free_step", "freed_after", "lifetime_steps", "outlives_backward", "grad_of", "value"]
INT_COLUMNS = ["peak_a", "peak_b", "peak_diff", "end_a", "end_b", "end_diff", "storage", "nbytes",
               "alloc_step", "free_step", "lifetime_steps"]


def comparison_csv(c) -> str:
    """Rows of kind ``role`` (bytes by role at each peak and at the end of backward), then
    rows of kind ``storage`` (one per storage that only one run has)."""
    roles = c.roles.assign(kind="role")
    extra = c.extra.rename(columns={"id": "storage"}).assign(kind="storage")
    frame = pd.concat([roles, extra], ignore_index=True).reindex(columns=CSV_COLUMNS)
    for col in INT_COLUMNS:
        frame[col] = frame[col].astype("Int64")
    return frame.to_csv(index=False, lineterminator="\n")


def summary_text(c, files: list[Path] | None = None) -> str:
    a, b = c.labels
    lines = [f"gradmem compare: {a} vs {b}"]
    for sec in answer(c):
        lines.append("  " + sec["head"].replace("`", ""))
        lines += ["    " + line.replace("`", "") for line in sec["lines"]]
    if files:
        lines.append(f"  wrote {files[0].parent}/: " + " ".join(f.name for f in files))
    return "\n".join(lines)


COMPARE_FILES = frozenset({COMPARISON_CSV, COMPARISON_HTML, "off", "on", "as-written"})


def claim_folder(out_dir: Path, force: bool) -> None:
    """Check the folder is gradmem's (or new), and mark it so the runs' folders may go in it."""
    check_target(out_dir, force, COMPARE_FILES)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_marker(out_dir, sorted(COMPARE_FILES))


def write_comparison(c, out_dir, force: bool = False) -> list[Path]:
    """comparison.csv and comparison.html into ``out_dir``, each written atomically."""
    out_dir = Path(out_dir)
    claim_folder(out_dir, force)
    return [write_atomic(out_dir / COMPARISON_CSV, comparison_csv(c)),
            write_atomic(out_dir / COMPARISON_HTML, ComparisonHtmlWriter().render(c))]
