"""Renderers: one writer per file. ``write_reports`` writes a whole report folder.

A report folder is replaced as a whole: files are written into a fresh folder beside it,
which then takes the old one's place, so a crash never leaves a mix of old and new files.
A folder that holds files gradmem did not write is left alone unless ``force`` is set.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ..errors import UsageError
from ..trace import write_trace
from .html import HtmlWriter
from .tables import CSV_WRITERS, SummaryJsonWriter

MARKER = ".gradmem-report"
FORMATS = {"csv": CSV_WRITERS, "json": [SummaryJsonWriter()], "html": [HtmlWriter()]}


def writers_for(formats) -> list:
    out = []
    for fmt in formats:
        if fmt == "trace":
            continue
        if fmt not in FORMATS:
            raise UsageError(f"unknown report format {fmt!r}: choose from {', '.join(sorted(FORMATS))}")
        out.extend(FORMATS[fmt])
    return out


def _check_target(out_dir: Path, force: bool) -> None:
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise UsageError(f"{out_dir}: exists and is not a folder; choose another output folder with -o.")
    if any(out_dir.iterdir()) and not (out_dir / MARKER).exists() and not force:
        raise UsageError(
            f"{out_dir}: this folder holds files gradmem did not write. Choose another output "
            "folder with -o, or pass --force to replace it."
        )


def write_reports(analysis, out_dir, formats=("csv", "json", "html", "trace"), force: bool = False) -> list[Path]:
    out_dir = Path(out_dir)
    writers = writers_for(formats)
    _check_target(out_dir, force)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        names = []
        for writer in writers:
            (staging / writer.filename).write_text(writer.render(analysis), encoding="utf-8")
            names.append(writer.filename)
        if "trace" in formats:
            write_trace(analysis.trace, staging / "trace.jsonl")
            names.append("trace.jsonl")
        (staging / MARKER).write_text("written by gradmem\n", encoding="utf-8")
        _swap(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return [out_dir / n for n in names]


def _swap(staging: Path, out_dir: Path) -> None:
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
    os.replace(staging, out_dir)
    os.chmod(out_dir, 0o755)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
