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
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .analysis import Analysis, analyze
from .analysis.compare import Comparison, compare as compare_runs
from .errors import GradmemError, InternalError, Interrupted, ScenarioError, TraceFileError, UsageError
from .render import write_files, write_reports
from .render.comparison import claim_folder, write_comparison
from .scenario import GradmemFault, describe_failure, load_scenario, parse_params, run_scenario
from .trace import read_trace

MODES = ("off", "on")
EXIT_ERRORS = {UsageError.exit_code: UsageError, ScenarioError.exit_code: ScenarioError,
               TraceFileError.exit_code: TraceFileError, Interrupted.exit_code: Interrupted,
               InternalError.exit_code: InternalError}


@dataclass
class Profiled:
    analysis: Analysis
    files: list[Path]
    error: GradmemError | None = None   # the scenario failed: raise after showing the summary


def profile(scenario: Path, params=(), device: str | None = None, retain_grad: str = "as-written",
            out_dir: Path | None = None, force: bool = False, formats: tuple | None = None,
            fake: bool = False, verify: bool = True, on_progress=None) -> Profiled:
    """Run a scenario script under a capture and write its reports. Every option is
    checked before the scenario runs; a failing scenario still gets its reports."""
    sc = load_scenario(scenario)
    values = parse_params(params, sc)
    out_dir = out_dir or Path("reports") / sc.name
    session, failure = run_scenario(sc, values, device, retain_grad, on_progress=on_progress, fake=fake,
                                    verify=verify)
    analysis = analyze(session.trace)
    files = write_reports(analysis, out_dir, force=force, **_formats(formats))
    error = None
    if failure is not None:
        kind = (Interrupted if isinstance(failure, KeyboardInterrupt) else
                InternalError if isinstance(failure, GradmemFault) else ScenarioError)
        error = kind(f"{describe_failure(sc, session, failure)}\n"
                     f"The events recorded before the failure are in {out_dir}/ (marked partial).")
    return Profiled(analysis, files, error)


def render(trace_file: Path, out_dir: Path | None = None, formats: tuple | None = None) -> tuple[Analysis, list[Path]]:
    """Every report again from a saved trace, without re-running the scenario."""
    analysis = analyze(read_trace(trace_file))
    return analysis, write_reports(analysis, out_dir or trace_file.parent, **_formats(formats))


def export(trace_file: Path, formats, out_dir: Path | None = None) -> list[Path]:
    """Files of other formats beside a saved trace; the folder's other files stay."""
    names = [f for f in formats if f != "trace"]
    return write_files(analyze(read_trace(trace_file)), out_dir or trace_file.parent, names)


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
            as_written: bool = False, force: bool = False) -> Compared:
    """One scenario run with retain_grad off and on (and as written), or two saved traces."""
    extra = None
    if len(paths) == 2:
        if params or device or as_written:
            raise UsageError("-p, --device and --as-written apply to a scenario; two trace files are compared as they are.")
        c = compare_traces(paths[0], paths[1], labels_for(*paths))
        out_dir = out_dir or default_folder(c.a.summary["scenario"], c.b.summary["scenario"])
    elif len(paths) == 1:
        sc = load_scenario(paths[0])
        parse_params(params, sc)   # a bad -p fails before anything runs
        out_dir = out_dir or default_folder(sc.name, sc.name)
        claim_folder(out_dir, force)
        modes = MODES + ("as-written",) * as_written
        traces = {m: run_mode(sc.path, params, device, m, out_dir / m, force) for m in modes}
        c = compare_traces(traces["off"], traces["on"], ("off", "on"))
        if as_written:
            extra = compare_traces(traces["off"], traces["as-written"], ("off", "as-written"))
    else:
        raise UsageError(f"give one scenario, or two trace files to compare (got {len(paths)} paths).")
    return Compared(c, write_comparison(c, out_dir, force=force), out_dir, extra)


def compare_traces(path_a: Path, path_b: Path, labels: tuple[str, str]) -> Comparison:
    """Comparison of two saved trace files (no torch)."""
    return compare_runs(analyze(read_trace(path_a)), analyze(read_trace(path_b)), labels)


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
    return out / "trace.jsonl"


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


def default_folder(scenario_a: str, scenario_b: str) -> Path:
    name = scenario_a if scenario_a == scenario_b else f"{scenario_a}-vs-{scenario_b}"
    return Path("reports") / f"{name or 'capture'}-compare"
