"""The stages wired in one place: profile (capture -> trace -> analysis -> reports), render
(a saved trace -> reports), export (extra formats beside a trace), compare (two runs).

The CLI (cli.py) only parses options, calls these and maps errors to exit codes; the
notebook magic (magic.py) and ``gradmem.capture()`` (session.py) use the same stages.

``compare`` runs each mode in a fresh ``python -m gradmem profile`` process, so no state
(the allocator, caches, module globals, the random generator) leaks from one run into the
next; the scenario's own ``torch.manual_seed`` makes the data the same. Comparing two
saved traces needs no torch at all. The steps of two different programs are aligned by op
name (``difflib``), quadratic in the worst case on very long, very different runs.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .analysis import Analysis, analyze
from .analysis.compare import Comparison, compare as compare_runs
from . import ranks
from .errors import GradmemError, InternalError, Interrupted, ScenarioError, TraceFileError, UsageError
from .render import (DEFAULT_FORMATS, MARKER, check_target, dropped_files, report_files, write_files, write_reports,
                     writers_for)
from .render.comparison import claim_folder, write_comparison
from .render.early import NODE_JOBS, TABLE_JOBS, TRACE_JOBS, start as early_files
from .gc_pause import process_ends
from .scenario import GradmemFault, describe_failure, load_scenario, parse_params, run_scenario
from .trace import find_trace, partial_line, read_trace
from .files import TRACE

MODES = ("off", "on")
ALL_MODES = ("off", "on", "as-written")
EXIT_ERRORS = {UsageError.exit_code: UsageError, ScenarioError.exit_code: ScenarioError,
               TraceFileError.exit_code: TraceFileError, Interrupted.exit_code: Interrupted,
               InternalError.exit_code: InternalError}


@dataclass
class Profiled:
    analysis: Analysis | None
    files: list[Path]
    error: GradmemError | None = None   # the scenario failed: raise after showing the summary
    merged: tuple | None = None         # a multi-process run: (RankMerge, its files), to show instead
    speaks: bool = True                 # False for a rank of a torchrun job other than rank 0


def profile(scenario: Path, params=(), device: str | None = None, retain_grad: str = "as-written",
            out_dir: Path | None = None, force: bool = False, formats: tuple | None = None,
            fake: bool = False, verify: bool = True, on_progress=None, say=None, engine: str = "auto",
            build_progress=None) -> Profiled:
    """Run a scenario script under a capture and write its reports. Every option is
    checked before the scenario runs; a failing scenario still gets its reports. As one
    rank of a torchrun job it writes ``out_dir/rank<R>/`` and rank 0 merges (ranks.py)."""
    sc = load_scenario(scenario)
    values = parse_params(params, sc)
    out_dir = out_dir or Path("reports") / sc.name
    chosen = _formats(formats)
    writers_for(chosen.get("formats", ()))   # a bad --format fails before anything runs,
    job = ranks.RankJob.here(out_dir, force)           # None outside a torchrun job
    if job is None:
        check_target(out_dir, force)         # and so does a folder that is not gradmem's
    merged = None
    with ranks.sigterm_guard(job is not None) as scenario_done:
        session, failure = run_scenario(sc, values, device, retain_grad, fake=fake, verify=verify,
                                        on_progress=None if job and job.quiet else on_progress,
                                        engine=engine, build_progress=build_progress)
        scenario_done()
        early = [_early(session.trace, out_dir, chosen, TRACE_JOBS)] if job is None else []
        try:
            analysis = analyze(session.trace)
            if job is not None:
                out_dir = job.folder
            else:
                early += [_early(analysis, out_dir, chosen, jobs) for jobs in (TABLE_JOBS, NODE_JOBS)]
            files = _write(analysis, out_dir, force, chosen, say, early=[e for e in early if e is not None])
        finally:
            for e in early:
                if e is not None:
                    e.discard()
        if job is not None:
            merged = job.finish()
    error = None
    if failure is not None:
        kind = (Interrupted if isinstance(failure, KeyboardInterrupt) else
                InternalError if isinstance(failure, GradmemFault) else ScenarioError)
        error = kind(f"{describe_failure(sc, session, failure)}\n"
                     f"The events recorded before the failure are in {out_dir}/ (marked partial).")
    return Profiled(analysis, files, error, merged, speaks=job is None)


def profile_ranks(scenario: Path, nproc: int, params=(), device: str | None = None, retain_grad: str = "as-written",
                  out_dir: Path | None = None, force: bool = False, formats: tuple | None = None,
                  verify: bool = True, fake: bool = False, engine: str | None = None) -> Profiled:
    """``--nproc-per-node N``: N ranks through torch.distributed.run, then their merge
    (each rank picks its engine as a single run would; the first to need the native
    extension builds it while the others wait for that build)."""
    sc = load_scenario(scenario)
    parse_params(params, sc)
    writers_for(_formats(formats).get("formats", ()))
    out_dir = out_dir or Path("reports") / sc.name
    forwarded = ranks.forwarded_options(params, device, retain_grad, force, ",".join(formats or ()), verify, fake, engine)
    merged, error = ranks.launch(sc.path, out_dir, nproc, forwarded, force, env=_env())
    return Profiled(None, merged[1], error, merged)


def render(trace_file: Path, out_dir: Path | None = None, formats: tuple | None = None, force: bool = False,
           say=None) -> tuple[Analysis, list[Path]]:
    """Every report again from a saved trace (or a report folder's), without re-running the
    scenario. ``say`` gets the lines meant for stderr (a partial trace, a file that went)."""
    chosen = _formats(formats)
    writers_for(chosen.get("formats", ()))
    if out_dir is not None:
        check_target(Path(out_dir), force)
    trace_file, trace = read_for_user(trace_file, say)
    own = out_dir is None or Path(out_dir).resolve() == trace_file.parent.resolve()
    out_dir = Path(out_dir or trace_file.parent)
    # a plain folder holding just the trace being redrawn may take its reports
    reread = {TRACE} if own and trace_file.name == TRACE else ()
    check_target(out_dir, force, unmarked_ok=reread)
    analysis = analyze(trace)
    return analysis, _write(analysis, out_dir, force, chosen, say, reread)


def export(trace_file: Path, formats, out_dir: Path | None = None, say=None) -> list[Path]:
    """Files of other formats beside a saved trace; the folder's other files stay."""
    names = [f for f in formats if f != "trace"]
    writers_for(names)
    trace_file, trace = read_for_user(trace_file, say)
    return write_files(analyze(trace), out_dir or trace_file.parent, names)


def read_for_user(path: Path, say=None):
    """(trace file, trace) from a file or a report folder, telling ``say`` when it read a
    folder's trace.jsonl and when the trace is partial (where it stops)."""
    say = say or (lambda line: None)
    found = find_trace(path)
    if found != Path(path):
        say(f"gradmem: {path} is a folder: reading {found}")
    trace = read_trace(found)
    line = partial_line(trace, found)
    if line:
        say(line)
    return found, trace


def _early(source, out_dir: Path, chosen: dict, jobs: dict):
    """Files of the report written by a child meanwhile (from the trace: during the
    analysis; from the analysis: during the page), in a process that ends after its
    command (the CLI: render/early.py); else None."""
    if not process_ends():
        return None
    return early_files(source, Path(out_dir), report_files(chosen.get("formats", DEFAULT_FORMATS)), jobs)


def _write(analysis, out_dir: Path, force: bool, chosen: dict, say=None, unmarked_ok=(), early=()) -> list[Path]:
    """Write the report folder; say which files of the earlier report are gone with it."""
    out_dir = Path(out_dir)
    dropped = dropped_files(out_dir, chosen.get("formats", DEFAULT_FORMATS)) if out_dir.is_dir() else []
    files = write_reports(analysis, out_dir, force=force, unmarked_ok=unmarked_ok, early=early, **chosen)
    if dropped and say:
        say(f"gradmem: replaced {out_dir}/ as a whole, so {', '.join(dropped)} from the earlier report "
            "(gradmem export or another --format wrote it for the old run) is gone: run "
            "gradmem export again, or pass --format, to write it for this run.")
    return files


def _formats(formats: tuple | None) -> dict:
    """write_reports' keyword: the chosen formats plus the trace (none given: its defaults)."""
    return {} if formats is None else {"formats": tuple(dict.fromkeys(list(formats) + ["trace"]))}


# -- compare ------------------------------------------------------------------------------------
@dataclass
class Compared:
    comparison: Comparison
    files: list[Path]
    out_dir: Path
    as_written: Comparison | None = None   # off vs the scenario as written, when asked for


def compare(paths, out_dir: Path | None = None, params=(), device: str | None = None,
            as_written: bool = False, force: bool = False, say=None) -> Compared:
    """One scenario run with retain_grad off and on (and as written), or two saved traces."""
    extra = None
    if len(paths) == 2:
        if params or device or as_written:
            raise UsageError("-p, --device and --as-written apply to a scenario; two trace files are compared as they are.")
        labels = labels_for(*paths)
        c = compare_traces(paths[0], paths[1], labels, say)
        # not the scenario comparison's folder: its off/ and on/ would no longer match
        out_dir = out_dir or default_folder(c.a.summary["scenario"], c.b.summary["scenario"], labels)
    elif len(paths) == 1:
        sc = load_scenario(paths[0])
        parse_params(params, sc)   # a bad -p fails before anything runs
        out_dir = out_dir or default_folder(sc.name, sc.name)
        claim_folder(out_dir, force)
        modes = MODES + ("as-written",) * as_written
        clear_stale_runs(out_dir, modes, say)
        traces = {m: run_mode(sc.path, params, device, m, out_dir / m, force) for m in modes}
        c = compare_traces(traces["off"], traces["on"], ("off", "on"))
        if as_written:
            extra = compare_traces(traces["off"], traces["as-written"], ("off", "as-written"))
    else:
        raise UsageError(f"give one scenario, or two trace files to compare (got {len(paths)} paths).")
    return Compared(c, write_comparison(c, out_dir, force=force), out_dir, extra)


def compare_traces(path_a: Path, path_b: Path, labels: tuple[str, str], say=None) -> Comparison:
    """Comparison of two saved trace files (no torch); ``say`` hears of a partial one."""
    (_, a), (_, b) = read_for_user(path_a, say), read_for_user(path_b, say)
    return compare_runs(analyze(a), analyze(b), labels)


def clear_stale_runs(out_dir: Path, modes, say=None) -> None:
    """A run folder an earlier compare left (``as-written/`` after a plain compare) would
    sit beside this comparison as if it were part of it: it is gradmem's, so it goes."""
    for mode in set(ALL_MODES) - set(modes):
        stale = Path(out_dir) / mode
        if (stale / MARKER).is_file():
            shutil.rmtree(stale)
            if say:
                say(f"gradmem: removed {stale}/, the run of an earlier compare with --{mode}: this comparison has no such run.")


def profile_command(scenario: Path, params, device, mode: str, out: Path, force: bool) -> list[str]:
    cmd = [sys.executable, "-m", "gradmem", "profile", str(scenario), "--retain-grad", mode, "-o", str(out), "-q"]
    for p in params:
        cmd += ["-p", p]
    if device:
        cmd += ["--device", device]
    if force:
        cmd.append("--force")
    return cmd


def _env() -> dict:
    """The child imports this very gradmem, wherever it was imported from."""
    here = str(Path(__file__).resolve().parent.parent)
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": here + (os.pathsep + path if path else "")}


def run_mode(scenario: Path, params, device, mode: str, out: Path, force: bool = False) -> Path:
    """Profile the scenario in a fresh process; returns its trace file. Its error, if any,
    comes back as the same exit code."""
    code = _run_passing_output_on(profile_command(scenario, params, device, mode, out, force))
    if code != 0:
        error = EXIT_ERRORS.get(code, GradmemError)
        raise error(f"the --retain-grad {mode} run of {scenario} failed (exit {code}); see its error above. "
                    f"What it recorded is in {out}/.")
    return out / TRACE


def _run_passing_output_on(cmd: list[str]) -> int:
    """Run cmd; its output (the scenario's prints, progress lines, its error) goes to this
    process's ``sys.stderr`` line by line as it comes, not to the inherited file handles:
    so a notebook cell, or a caller that captures ``sys.stderr``, sees it too. On stderr
    because stdout is the comparison's summary."""
    with subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, errors="replace") as proc:
        for line in proc.stdout:
            sys.stderr.write(line)
            sys.stderr.flush()
    return proc.returncode


def labels_for(path_a: Path, path_b: Path) -> tuple[str, str]:
    """Name each saved run by its folder, else its file name, else a and b."""
    for a, b in ((path_a.parent.name, path_b.parent.name), (path_a.stem, path_b.stem)):
        if a and b and a != b:
            return a, b
    return "a", "b"


def default_folder(scenario_a: str, scenario_b: str, labels: tuple[str, str] | None = None) -> Path:
    """reports/<scenario>-compare for a scenario; two traces add their labels, so they never
    land in (and half overwrite) a scenario comparison's folder."""
    name = scenario_a if scenario_a == scenario_b else f"{scenario_a}-vs-{scenario_b}"
    runs = f"-{labels[0]}-vs-{labels[1]}" if labels else ""
    return Path("reports") / f"{name or 'capture'}-compare{runs}"
