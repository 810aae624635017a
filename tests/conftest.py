"""Shared by every test folder (tests/unit, tests/capture, ... see tests/README.md): the
checkout on sys.path, tests/helpers importable by module name (``from oracles import ...``),
the CLI runners and the seed reports."""
import contextlib
import os
import subprocess
import sys
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
SCENARIOS = ROOT / "scenarios"
if os.environ.get("PYTEST_XDIST_WORKER"):   # one worker per core: torch's own threads would oversubscribe
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch
    torch.set_num_threads(1)
for _path in (TESTS / "helpers", TESTS, ROOT):   # ROOT first: this checkout's gradmem, whatever is pip-installed
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))


@dataclass
class CliResult:
    """What a run of the CLI gave, the same fields as ``subprocess.CompletedProcess``."""
    args: list
    returncode: int
    stdout: str
    stderr: str


def run_cli(*args, cwd=None, check=False, timeout=300, env=None) -> CliResult:
    """Run the CLI in this process through click's CliRunner, as a fresh process would
    see it: cwd, sys.argv, environment, warnings and torch's random generator are set
    for the run and put back after it. What gradmem itself touches (torch's mode stacks,
    saved-tensor hooks, grad mode, default device and dtype, the profiler) must be as it
    was: if not, gradmem leaked state into its caller (a notebook runs it in-process too)
    and the test fails. ``timeout`` applies to ``run_cli_process`` only."""
    from click.testing import CliRunner
    from gradmem.cli import main

    argv = [str(a) for a in args]
    before = torch_state()
    with _as_a_fresh_process(argv, cwd or ROOT):
        try:
            runner = CliRunner(mix_stderr=False)   # click < 8.2
        except TypeError:
            runner = CliRunner()                   # click >= 8.2: stderr is always apart
        result = runner.invoke(main, argv, env=env, prog_name="gradmem")
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(*result.exc_info))   # what python would print
    after = torch_state()
    leaked = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
    assert not leaked, f"gradmem {' '.join(argv)} left torch state changed (before, after): {leaked}"
    return _checked(CliResult(["gradmem", *argv], result.exit_code, result.stdout, stderr), check)


def run_cli_process(*args, cwd=None, check=False, timeout=300, env=None) -> subprocess.CompletedProcess:
    """Run ``python -m gradmem`` in a fresh process: for what only a process boundary
    shows (the module entry point, exit codes a process ends with, imports of a new
    interpreter). Everything else uses ``run_cli``: a process costs seconds of torch import."""
    proc = subprocess.run([sys.executable, "-m", "gradmem", *map(str, args)], cwd=cwd or ROOT,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    return _checked(proc, check)


def _checked(proc, check: bool):
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, proc.args))} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def torch_state() -> dict:
    """The torch globals a capture changes while it runs and must restore."""
    import torch
    return {"function_modes": torch._C._len_torch_function_stack(),
            "dispatch_modes": torch._C._len_torch_dispatch_stack(),
            "saved_tensor_hooks": torch._C._autograd._top_saved_tensors_default_hooks(False) is not None,
            "grad_enabled": torch.is_grad_enabled(),
            "default_device": str(torch.get_default_device()),
            "default_dtype": torch.get_default_dtype(),
            "profiler": bool(torch._C._autograd._profiler_enabled())}


# a new interpreter's warning filters (python -W none, not under pytest)
_PYTHON_FILTERS = (("default", DeprecationWarning, "__main__"), ("ignore", DeprecationWarning, None),
                   ("ignore", PendingDeprecationWarning, None), ("ignore", ImportWarning, None),
                   ("ignore", ResourceWarning, None))


def _print_warning(message, category, filename, lineno, file=None, line=None):
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


@contextlib.contextmanager
def _as_a_fresh_process(argv: list[str], cwd: Path):
    """cwd, sys.argv, warning filters and torch's random generator as in a new process
    (pytest records warnings itself: here they go to the run's stderr), restored after."""
    import torch
    old_cwd, old_argv, rng = os.getcwd(), sys.argv, torch.random.get_rng_state()
    with warnings.catch_warnings():
        warnings.resetwarnings()
        for action, category, module in reversed(_PYTHON_FILTERS):
            warnings.filterwarnings(action, category=category, module=module or "")
        warnings.showwarning = _print_warning
        os.chdir(cwd)
        sys.argv = [str(ROOT / "gradmem" / "__main__.py"), *argv]
        try:
            yield
        finally:
            os.chdir(old_cwd)
            sys.argv = old_argv
            torch.random.set_rng_state(rng)


@pytest.fixture(scope="session")
def native():
    """The native extension, built here if need be (about 30 s once per torch version)."""
    from gradmem.capture.native import loader
    ext = loader.load(loader.stderr_progress)
    if ext is None and loader.compiler() is not None:   # a broken source must not pass as a skip
        pytest.fail(f"a C++ compiler is on PATH, yet {loader.why_not()}")
    if ext is None:
        pytest.skip(f"native engine unavailable: {loader.why_not()}")
    return ext


@pytest.fixture(scope="session")
def seed_reports(tmp_path_factory):
    """The three seed scenarios profiled through the CLI; {name: report folder}."""
    out = {}
    for name in ("seed_one_weight", "seed_two_weights", "seed_two_rows"):
        folder = tmp_path_factory.mktemp("reports") / name
        run_cli("profile", SCENARIOS / f"{name}.py", "-o", folder, "-q", check=True)
        out[name] = folder
    return out


def read_tensors(folder) -> pd.DataFrame:
    return pd.read_csv(Path(folder) / "tensors.csv", keep_default_na=False, dtype=str)


def value_of(tensors: pd.DataFrame, name: str) -> str:
    rows = tensors[tensors["name"] == name]
    assert len(rows) == 1, f"expected one storage named {name!r}, found {len(rows)}: {list(tensors['name'])}"
    return rows.iloc[0]["value"]


# The files that take longest, longest first: workers take a file at a time, so starting
# these first keeps one long file from running alone at the end (about 30 s of a 4-minute
# suite on 2 cores). Only the order changes; a file's own tests keep theirs.
SLOW_FIRST = ("oracles/test_properties.py", "cli/test_compare.py", "browser/test_report_browser.py",
              "distributed/test_ranks.py", "browser/test_compare_browser.py", "cli/test_fit_suggest.py",
              "story/test_tutorial.py", "cli/test_fit.py")


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        path = item.path.as_posix()
        return next((k for k, tail in enumerate(SLOW_FIRST) if path.endswith(tail)), len(SLOW_FIRST))
    items.sort(key=rank)
