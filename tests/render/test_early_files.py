"""render/early.py: report files written by forked children, as the CLI does. The folder
they make is byte for byte the one the parent writes alone, and a child that fails costs
nothing: the parent writes its files itself."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT
from gradmem.analysis import analyze
from gradmem.capture import Capture
from gradmem.render import write_reports
from gradmem.render.early import NODE_JOBS, TABLE_JOBS, TRACE_JOBS, EarlyFiles, start

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the children are forked (Linux)")


@pytest.fixture(scope="module")
def analysis():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    with Capture(engine="python") as cap:
        model(torch.randn(4, 8)).pow(2).mean().backward()
    return analyze(cap.trace)


def files(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_the_children_write_the_same_report_as_the_parent_alone(analysis, tmp_path):
    alone = tmp_path / "alone"
    write_reports(analysis, alone)
    names = [p.name for p in alone.iterdir()]
    early = [start(analysis.trace, tmp_path / "forked", names, TRACE_JOBS),
             start(analysis, tmp_path / "forked", names, TABLE_JOBS), start(analysis, tmp_path / "forked", names, NODE_JOBS)]
    assert all(e is not None for e in early)
    write_reports(analysis, tmp_path / "forked", early=early)
    for e in early:
        e.discard()
    assert files(tmp_path / "forked") == files(alone)
    assert set(early[0].names) == {"trace.jsonl", "events.csv"} and "tensors.csv" in early[1].names
    assert early[2].names == ["nodes.csv"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".gradmem-early.")]   # nothing left behind


def _failing(source, path):
    raise RuntimeError("injected failure in a child")


def test_a_child_that_fails_leaves_its_files_to_the_parent(analysis, tmp_path, capfd):
    alone = tmp_path / "alone"
    write_reports(analysis, alone)
    early = EarlyFiles(analysis.trace, tmp_path, {"trace.jsonl": _failing, "events.csv": TRACE_JOBS["events.csv"]})
    write_reports(analysis, tmp_path / "forked", early=[early])
    early.discard()
    assert files(tmp_path / "forked") == files(alone)
    err = capfd.readouterr().err
    assert "injected failure in a child" in err and "gradmem's fault, not the scenario's" in err


def test_the_cli_process_forks_and_its_report_is_whole(tmp_path):
    """The real thing: ``python -m gradmem profile`` (its process ends after the command)."""
    out = tmp_path / "r"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "gradmem", "profile", str(ROOT / "scenarios" / "seed_two_rows.py"),
                           "-o", str(out), "-q"], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = (out / "trace.jsonl").read_text().splitlines()
    assert '"kind": "end"' in lines[-1] and len(lines) > 40
    assert (out / "events.csv").read_text().count("\n") == len(lines) - 1   # header + one row per event
    assert (out / "tensors.csv").read_text().startswith("id,name,role")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no child's folder left
