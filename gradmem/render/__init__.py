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
from ..files import write_atomic
from ..trace import write_trace
from .chrome import ChromeTraceWriter
from .html import HtmlWriter
from .memory_viz import MemoryVizJsonWriter, MemoryVizPickleWriter
from .tables import CSV_WRITERS, SummaryJsonWriter

MARKER = ".gradmem-report"
FORMATS = {
    "csv": CSV_WRITERS,
    "json": [SummaryJsonWriter()],
    "html": [HtmlWriter()],
    "chrome": [ChromeTraceWriter()],
    "memory_viz": [MemoryVizPickleWriter(), MemoryVizJsonWriter()],
}


def writers_for(formats) -> list:
    out = []
    for fmt in formats:
        if fmt == "trace":
            continue
        if fmt not in FORMATS:
            raise UsageError(f"unknown report format {fmt!r}: choose from {', '.join(sorted(FORMATS))}")
        out.extend(FORMATS[fmt])
    return out


def check_target(out_dir: Path, force: bool) -> None:
    """A report goes into a new folder or one gradmem wrote; another needs ``force``."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise UsageError(f"{out_dir}: exists and is not a folder; choose another output folder with -o.")
    if any(out_dir.iterdir()) and not (out_dir / MARKER).exists() and not force:
        raise UsageError(
            f"{out_dir}: this folder holds files gradmem did not write. Choose another output "
            "folder with -o, or pass --force to replace it."
        )


DEFAULT_FORMATS = ("csv", "json", "html", "trace")


def write_reports(analysis, out_dir, formats=DEFAULT_FORMATS, force: bool = False) -> list[Path]:
    out_dir = Path(out_dir)
    writers = writers_for(formats)
    check_target(out_dir, force)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        names = []
        for writer in writers:
            _write(staging / writer.filename, writer.render(analysis))
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


def write_files(analysis, out_dir, formats) -> list[Path]:
    """Write the files of ``formats`` into ``out_dir``, each atomically, leaving the
    folder's other files alone (``gradmem export``)."""
    out_dir = Path(out_dir)
    writers = writers_for(formats)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for writer in writers:
        paths.append(write_atomic(out_dir / writer.filename, writer.render(analysis)))
    return paths


def _write(path: Path, data: str | bytes) -> None:
    if isinstance(data, bytes):      # pickle (memory_viz)
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8")


def _swap(staging: Path, out_dir: Path) -> None:
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
    os.replace(staging, out_dir)
    os.chmod(out_dir, 0o755)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
