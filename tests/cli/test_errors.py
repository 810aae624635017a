"""Bad input gets a clear error naming the file and line, a non-zero exit code, and
whatever was recorded before a failure is still written."""
import json

import pytest
import torch

from conftest import SCENARIOS, run_cli, run_cli_process
from gradmem.analysis import analyze
from gradmem.capture import Capture


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_missing_file(tmp_path):
    proc = run_cli("profile", tmp_path / "nope.py", "-o", tmp_path / "out")
    assert proc.returncode == 2
    assert "nope.py: no such scenario file" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, "broken.py", "import torch\nx = torch.ones(3\ny = 2\n")
    proc = run_cli("profile", path, "-o", tmp_path / "out")
    assert proc.returncode == 3
    assert f"{path}:2: syntax error" in proc.stderr


def test_bad_param_value_and_name(tmp_path):
    proc = run_cli("profile", SCENARIOS / "linear_mse.py", "-p", "n=lots", "-o", tmp_path / "out")
    assert proc.returncode == 2 and "-p n=lots: n expects int" in proc.stderr
    proc = run_cli("profile", SCENARIOS / "linear_mse.py", "-p", "rows=5", "-o", tmp_path / "out")
    assert proc.returncode == 2 and "has no such parameter (it takes: n, d," in proc.stderr
    proc = run_cli("profile", SCENARIOS / "linear_mse.py", "-p", "n5", "-o", tmp_path / "out")
    assert proc.returncode == 2 and "expected NAME=VALUE" in proc.stderr
    proc = run_cli("profile", SCENARIOS / "seed_two_rows.py", "-p", "n=5", "-o", tmp_path / "out")
    assert proc.returncode == 2 and "defines no main()" in proc.stderr


RAISES_IN_BACKWARD = """\
import torch
x = torch.randn(100, 4)
w = torch.randn(4, requires_grad=True)
error = x @ w - 1
def boom(grad):
    raise ValueError("bad gradient")
error.register_hook(boom)
(error ** 2).mean().backward()
"""


def test_scenario_raising_writes_partial_reports(tmp_path):
    path = write(tmp_path, "raises.py", RAISES_IN_BACKWARD)
    out = tmp_path / "out"
    proc = run_cli_process("profile", path, "-o", out)   # python -m gradmem, end to end
    assert proc.returncode == 3
    assert f"{path}:6: the scenario raised ValueError: bad gradient" in proc.stderr
    assert "marked partial" in proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "partial" and summary["error"]["line"] == 6
    tensors = (out / "tensors.csv").read_text()
    assert "error" in tensors and "activation" in tensors   # the forward pass was recorded
    assert (out / "trace.jsonl").read_text().count('"kind": "error"') == 1


def test_nothing_left_hooked_after_a_failure():
    def step():
        x = torch.tensor([[10., 15.], [30., 40.]])
        w = torch.tensor([5., 6.], requires_grad=True)
        error = torch.tensor([20., 25.]) - x @ w
        (error ** 2).mean().backward()

    def story():
        with Capture() as cap:
            step()
        return analyze(cap.trace).story()

    first = story()
    try:
        with Capture():
            x = torch.ones(3, requires_grad=True)
            (x * 2).sum().backward()
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert torch._C._autograd._top_saved_tensors_default_hooks(False) is None
    assert not torch.overrides._is_torch_function_mode_enabled()
    assert story() == first


def test_exit_zero_is_a_normal_end(tmp_path):
    path = write(tmp_path, "exits.py", "import sys, torch\nx = torch.ones(2, requires_grad=True)\n(x * 2).sum().backward()\nsys.exit(0)\n")
    proc = run_cli_process("profile", path, "-o", tmp_path / "out", "-q")   # sys.exit(0) must not end gradmem's process early
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["status"] == "complete"


def test_refuses_to_overwrite_a_foreign_folder(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    proc = run_cli("profile", SCENARIOS / "seed_one_weight.py", "-o", out)
    assert proc.returncode == 2 and "files gradmem did not write" in proc.stderr
    assert (out / "thesis.tex").read_text() == "precious"


def test_rerun_replaces_the_report_folder_as_a_whole(tmp_path):
    """A file an earlier run wrote (here its Perfetto trace, via --format) goes with the old
    folder; a file the user added would stop the run instead (tests/test_cli_checks.py)."""
    out = tmp_path / "r"
    run_cli("profile", SCENARIOS / "seed_one_weight.py", "-o", out, "-q", "--format", "csv,chrome", check=False)
    assert (out / "trace.chrome.json").exists()
    proc = run_cli("profile", SCENARIOS / "seed_one_weight.py", "-o", out, "-q")
    assert proc.returncode == 0, proc.stderr
    assert not (out / "trace.chrome.json").exists() and (out / "tensors.csv").exists()
    assert "trace.chrome.json" in proc.stderr
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no staging folders left behind"


@pytest.mark.parametrize("engine", ["python", "native"])
def test_progress_lines_on_stderr(tmp_path, request, engine):
    if engine == "native":
        request.getfixturevalue("native")   # built, or the test skips (no compiler)
    proc = run_cli("profile", SCENARIOS / "seed_two_rows.py", "-o", tmp_path / "out", "-q", "--engine", engine,
                   env={"GRADMEM_PROGRESS_EVERY": "0"})
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("gradmem: ") and " step " in line]
    assert any("(backward)" in line for line in lines) and any("(forward)" in line for line in lines)
    assert proc.stdout == ""


AT_EXIT = """\
import atexit, gc, torch
marker = __file__ + ".exit"
atexit.register(lambda: open(marker, "w").write(str(gc.get_freeze_count())))
w = torch.ones(3, requires_grad=True)
(w * 2).sum().backward()
"""


def test_process_exit_runs_the_scenarios_atexit_with_the_collector_frozen(tmp_path):
    """The entry point freezes the collector as the command ends (no last walk over the
    trace's objects), and the scenario's own atexit handlers still run after it."""
    path = write(tmp_path, "at_exit.py", AT_EXIT)
    proc = run_cli_process("profile", path, "-o", tmp_path / "out", "-q")
    assert proc.returncode == 0, proc.stderr
    assert int((tmp_path / "at_exit.py.exit").read_text()) > 0
    assert (tmp_path / "out" / "report.html").exists()
