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
from ..gc_pause import paused
from ..trace import write_trace
from .chrome import ChromeTraceWriter
from .html import HtmlWriter
from .memory_viz import MemoryVizJsonWriter, MemoryVizPickleWriter
from .tables import CSV_WRITERS, SummaryJsonWriter
from ..files import MARKER, TRACE

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


REPORT_FILES = frozenset({TRACE, *(w.filename for ws in FORMATS.values() for w in ws)})
EXPORT = "export "   # marker line prefix: a file `gradmem export` added to the folder


def marker_lines(out_dir: Path) -> list[str]:
    """The names the folder's marker lists (what gradmem wrote there), [] if it has none."""
    marker = out_dir / MARKER
    return marker.read_text(encoding="utf-8").splitlines()[1:] if marker.is_file() else []


def foreign_files(out_dir: Path, ours=REPORT_FILES) -> list[str]:
    """Names in a gradmem folder that gradmem did not write (a user's notes, a copy)."""
    listed = {n.removeprefix(EXPORT) for n in marker_lines(out_dir)}
    known = {MARKER, *ours, *listed}
    return sorted(p.name for p in out_dir.iterdir() if p.name not in known and not _our_temp(p.name))


def _our_temp(name: str) -> bool:
    return name.startswith(".") and (".tmp-" in name or ".old-" in name)


def check_target(out_dir: Path, force: bool, ours=REPORT_FILES, unmarked_ok=()) -> None:
    """A report goes into a new folder or one gradmem wrote and nobody added to; another
    needs ``force``. Called before the scenario runs, so a refusal costs nothing.
    ``unmarked_ok``: names a folder without gradmem's marker may hold (the trace.jsonl that
    ``gradmem render`` reads and writes again)."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise UsageError(f"{out_dir}: exists and is not a folder; choose another output folder with -o.")
    if force:
        return
    if not (out_dir / MARKER).exists():
        if any(p.name not in unmarked_ok for p in out_dir.iterdir()):
            raise UsageError(
                f"{out_dir}: this folder holds files gradmem did not write. Choose another output "
                "folder with -o, or pass --force to replace it.")
        return
    foreign = foreign_files(out_dir, ours)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise UsageError(
            f"{out_dir}: this folder holds files gradmem did not write ({shown}). Move them out, choose "
            "another output folder with -o, or pass --force to replace the folder (and delete them).")


def dropped_files(out_dir: Path, formats) -> list[str]:
    """Files gradmem wrote into the folder earlier (``gradmem export``, another
    ``--format``) that a rewrite with ``formats`` will not write again: they describe the
    old trace, so they go with the old folder, and the caller says so."""
    new = {w.filename for w in writers_for(formats)} | {TRACE, MARKER}
    names = [n.removeprefix(EXPORT) for n in marker_lines(Path(out_dir))]
    return [n for n in names if n not in new and (Path(out_dir) / n).exists()]


def write_marker(folder: Path, names, exports=()) -> None:
    lines = ["written by gradmem", *names, *(EXPORT + n for n in exports)]
    (folder / MARKER).write_text("\n".join(lines) + "\n", encoding="utf-8")


DEFAULT_FORMATS = ("csv", "json", "html", "trace")


def report_files(formats=DEFAULT_FORMATS) -> list[str]:
    """The names of the files a report of these formats holds, in the order written."""
    return [w.filename for w in writers_for(formats)] + ([TRACE] if "trace" in formats else [])


def write_reports(analysis, out_dir, formats=DEFAULT_FORMATS, force: bool = False, unmarked_ok=(),
                  early=()) -> list[Path]:
    """``early``: render.early.EarlyFiles writing some of these files already; what they
    wrote is moved in, the rest (all of a child's, if it failed) is written here."""
    out_dir = Path(out_dir)
    writers = writers_for(formats)
    check_target(out_dir, force, unmarked_ok=unmarked_ok)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        with paused():   # the trace's objects, walked by every full collection (gradmem.gc_pause)
            names = report_files(formats)
            given = {n for e in early for n in e.names}   # files a child writes
            for writer in writers:
                if writer.filename not in given:
                    _write(staging / writer.filename, writer.render(analysis))
            ready = {n: path for e in early for n, path in e.take().items()}
            for name, path in ready.items():
                os.replace(path, staging / name)
            for writer in writers:
                if writer.filename in given and writer.filename not in ready:   # its child failed: written here
                    _write(staging / writer.filename, writer.render(analysis))
            if "trace" in formats and TRACE not in ready:
                write_trace(analysis.trace, staging / TRACE)
        write_marker(staging, names)
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
    with paused():
        for writer in writers:
            paths.append(write_atomic(out_dir / writer.filename, writer.render(analysis)))
    if (out_dir / MARKER).exists():   # a report folder: list the additions as gradmem's
        lines = marker_lines(out_dir)
        plain = [n for n in lines if not n.startswith(EXPORT)]
        exports = dict.fromkeys([n[len(EXPORT):] for n in lines if n.startswith(EXPORT)] + [p.name for p in paths])
        write_marker(out_dir, plain, [n for n in exports if n not in plain])
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
