"""``gradmem compare``: the same scenario with ``retain_grad`` off and on, or any two saved
runs, side by side.

Each mode runs in a fresh ``python -m gradmem profile`` process, so no state (the
allocator, caches, module globals, the random generator) leaks from one run into the next;
the scenario's own ``torch.manual_seed`` makes the data the same. Comparing two saved
traces needs no torch at all.

Example::

    gradmem compare scenarios/seed_two_rows.py            # reports/seed_two_rows-compare/
    gradmem compare runs/plain/trace.jsonl runs/ckpt/trace.jsonl -o reports/ckpt

Known limitations: the steps of two different programs are aligned by op name
(``difflib``), which is quadratic in the worst case on very long, very different runs.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .errors import GradmemError, Interrupted, ScenarioError, TraceFileError, UsageError

MODES = ("off", "on")
EXIT_ERRORS = {UsageError.exit_code: UsageError, ScenarioError.exit_code: ScenarioError,
               TraceFileError.exit_code: TraceFileError, Interrupted.exit_code: Interrupted}


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
    goes to stderr as usual and comes back as the same exit code."""
    code = subprocess.run(profile_command(scenario, params, device, mode, out, force), env=_env()).returncode
    if code != 0:
        error = EXIT_ERRORS.get(code, GradmemError)
        raise error(f"the --retain-grad {mode} run of {scenario} failed (exit {code}); see its error above. "
                    f"What it recorded is in {out}/.")
    return out / "trace.jsonl"


def labels_for(path_a: Path, path_b: Path) -> tuple[str, str]:
    """Name each saved run by its folder, else its file name, else a and b."""
    for a, b in ((path_a.parent.name, path_b.parent.name), (path_a.stem, path_b.stem)):
        if a and b and a != b:
            return a, b
    return "a", "b"


def default_folder(scenario_a: str, scenario_b: str) -> Path:
    name = scenario_a if scenario_a == scenario_b else f"{scenario_a}-vs-{scenario_b}"
    return Path("reports") / f"{name or 'capture'}-compare"


def compare_traces(path_a: Path, path_b: Path, labels: tuple[str, str]):
    """Comparison of two saved trace files (no torch)."""
    from .analysis import analyze
    from .analysis.compare import compare
    from .trace import read_trace

    return compare(analyze(read_trace(path_a)), analyze(read_trace(path_b)), labels)
