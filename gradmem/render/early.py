"""Report files written by forked children while the parent goes on.

``trace.jsonl`` and ``events.csv`` hold every event and need only the trace, not its
analysis: on a 30-step run of a 100-layer MLP (200,000 events) they take about 1.5 s to
write, as long as the analysis itself; the CSV tables need the analysis but not the page.
A process that ends after its command (the CLI, ``gc_pause.ending_process``) forks once
the trace is built (``TRACE_JOBS``) and twice once the analysis is (``TABLE_JOBS``, ``NODE_JOBS``); each child
writes its files into a folder of its own beside the report and exits, and the parent,
after its own files, moves them into the report (``write_reports(early=...)``). A child
touches no torch and leaves through ``os._exit`` (no atexit handler of the program runs
twice, no stdio buffer is flushed twice). If one fails, or fork is not there (not Linux),
the parent writes its files itself, so nothing is lost; a child's failure is said on
stderr as gradmem's.
"""
from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from ..files import EVENTS_CSV, NODES_CSV, STEPS_CSV, TENSORS_CSV, TRACE
from ..trace import write_trace
from .tables import CSV_WRITERS, EventsCsvWriter


def _events_csv(trace, path: Path) -> None:
    path.write_text(EventsCsvWriter().render_trace(trace), encoding="utf-8")


def _table(writer):
    return lambda analysis, path: path.write_text(writer.render(analysis), encoding="utf-8")


TRACE_JOBS = {TRACE: write_trace, EVENTS_CSV: _events_csv}   # from the trace
# from the analysis, in two children: the tensors and steps tables, and the nodes table;
# the parent writes the page meanwhile, about as long (a 30-step MLP: 0.3-0.4 s each)
def _tables(*names: str) -> dict:
    return {w.filename: _table(w) for w in CSV_WRITERS if w.filename in names}


TABLE_JOBS, NODE_JOBS = _tables(TENSORS_CSV, STEPS_CSV), _tables(NODES_CSV)


class EarlyFiles:
    """A child writing ``jobs`` ({file name: job(source, path)}) of ``source`` (a trace or
    an analysis); ``take()`` waits and returns the files it wrote."""

    def __init__(self, source, beside: Path, jobs: dict):
        self.names = list(jobs)
        beside.mkdir(parents=True, exist_ok=True)
        self.folder = Path(tempfile.mkdtemp(prefix=".gradmem-early.", dir=beside))
        self.pid = os.fork()
        if self.pid == 0:
            _child(source, self.folder, jobs)

    def take(self) -> dict[str, Path]:
        """Wait for the child: {name: path} of what it wrote ({} when it failed)."""
        if self.pid is None:
            return {}
        _, status = os.waitpid(self.pid, 0)
        self.pid = None
        if os.waitstatus_to_exitcode(status) != 0:
            return {}
        return {n: self.folder / n for n in self.names if (self.folder / n).is_file()}

    def discard(self) -> None:
        """Stop a child still running and remove its folder (what was taken is moved out)."""
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            self.pid = None
        shutil.rmtree(self.folder, ignore_errors=True)


def _child(source, folder: Path, jobs: dict) -> None:
    code = 1
    try:
        signal.signal(signal.SIGINT, signal.SIG_DFL)   # Ctrl-C: the parent handles it, and discards this
        for name, job in jobs.items():
            job(source, folder / name)
        code = 0
    except BaseException as exc:   # noqa: BLE001 - the parent writes the files instead
        try:
            print(f"gradmem: writing {', '.join(jobs)} beside the analysis failed ({type(exc).__name__}: {exc}); "
                  "gradmem's fault, not the scenario's: they are written again after it", file=sys.stderr, flush=True)
        except BaseException:   # noqa: BLE001
            pass
    finally:
        os._exit(code)


def start(source, out_dir: Path, names, jobs: dict) -> EarlyFiles | None:
    """A child for the ``jobs`` among ``names`` (the report's files) of a report going to
    ``out_dir``, where fork can run; else None."""
    mine = {n: job for n, job in jobs.items() if n in names}
    if not hasattr(os, "fork") or not sys.platform.startswith("linux") or not mine:
        return None
    try:
        return EarlyFiles(source, Path(out_dir).parent, mine)
    except OSError:
        return None
