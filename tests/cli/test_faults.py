"""Faults a real user meets: empty or step-less scenarios, no backward pass, asking for
more memory than there is, Ctrl-C, broken trace files. Each gives a clear error naming
the file (and line where there is one), a non-zero exit code, and nothing lost."""
import json

from conftest import SCENARIOS, run_cli, run_cli_process


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def summary(folder):
    return json.loads((folder / "summary.json").read_text())


def test_empty_scenario_says_no_backward_ran(tmp_path):
    path = write(tmp_path, "empty.py", "")
    proc = run_cli("profile", path, "-o", tmp_path / "out")
    assert proc.returncode == 3
    assert f"{path}: no backward pass ran" in proc.stderr
    assert summary(tmp_path / "out")["status"] == "partial"


def test_scenario_with_only_definitions(tmp_path):
    path = write(tmp_path, "defs.py", "import torch\n\ndef step(x):\n    return (x * 2).sum()\n")
    proc = run_cli("profile", path, "-o", tmp_path / "out")
    assert proc.returncode == 3 and "no backward pass ran" in proc.stderr


def test_forward_only_scenario_keeps_what_it_recorded(tmp_path):
    path = write(tmp_path, "fwd.py", "import torch\nw = torch.randn(100, requires_grad=True)\nloss = (w * 2).sum()\n")
    proc = run_cli("profile", path, "-o", tmp_path / "out")
    assert proc.returncode == 3 and "never called .backward()" in proc.stderr
    tensors = (tmp_path / "out" / "tensors.csv").read_text()
    assert "w,parameter" in tensors and "loss" in tensors


def test_not_python(tmp_path):
    path = tmp_path / "data.py"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    proc = run_cli("profile", path, "-o", tmp_path / "out")
    assert proc.returncode == 3 and f"{path}" in proc.stderr and "not a Python script" in proc.stderr


def test_asking_for_too_much_memory(tmp_path):
    out = tmp_path / "out"
    proc = run_cli("profile", SCENARIOS / "linear_mse.py", "-p", "n=100000000000", "-o", out)
    assert proc.returncode == 3
    assert "linear_mse.py:" in proc.stderr and "try smaller -p values" in proc.stderr
    assert summary(out)["status"] == "partial" and summary(out)["error"]["line"] is not None


def test_ctrl_c_writes_partial_reports(tmp_path):
    path = write(tmp_path, "stop.py",
                 "import torch\nw = torch.randn(10, requires_grad=True)\n(w * 3).sum().backward()\nraise KeyboardInterrupt\n")
    proc = run_cli_process("profile", path, "-o", tmp_path / "out")   # the exit code the process ends with
    assert proc.returncode == 130 and "interrupted" in proc.stderr
    s = summary(tmp_path / "out")
    assert s["status"] == "partial" and s["backward_nodes"] >= 2


def test_render_broken_traces(tmp_path):
    run_cli("profile", SCENARIOS / "seed_two_rows.py", "-o", tmp_path / "r", "-q", check=True)
    trace = (tmp_path / "r" / "trace.jsonl").read_text().splitlines()
    cut = tmp_path / "cut.jsonl"
    cut.write_text("\n".join(trace[: len(trace) // 2]) + "\n" + trace[len(trace) // 2][:7])
    proc = run_cli("render", cut, "-o", tmp_path / "cut_out")
    assert proc.returncode == 0 and "PARTIAL" in proc.stdout and "ends early" in proc.stdout
    future = tmp_path / "future.jsonl"
    future.write_text(json.dumps({"kind": "meta", "schema": 7}) + "\n")
    proc = run_cli("render", future, "-o", tmp_path / "f_out")
    assert proc.returncode == 4 and "schema 7 is newer" in proc.stderr
    junk = tmp_path / "junk.jsonl"
    junk.write_text("not json\n")
    proc = run_cli("render", junk, "-o", tmp_path / "j_out")
    assert proc.returncode == 4 and f"{junk}:1: not a gradmem trace" in proc.stderr
