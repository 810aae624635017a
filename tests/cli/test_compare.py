"""gradmem compare through the real CLI: retain_grad off vs on on the seeds and at scale,
two arbitrary traces (with and without checkpoint), and the errors. The expected bytes come
from plain torch, run in this process, never from gradmem."""
import json
import re
import runpy
import subprocess
import sys

import pandas as pd
import pytest
import torch
from torch.overrides import TorchFunctionMode

from conftest import ROOT, SCENARIOS, run_cli
from gradmem.analysis.compare import match_storages

SEEDS = ("seed_one_weight", "seed_two_weights", "seed_two_rows")


def nonleaf_grad_bytes(namespace: dict) -> dict[str, int]:
    """Oracle: {name: numel * element_size} of every program variable that is a non-leaf
    tensor requiring grad (each gets one gradient of its own size)."""
    return {k: v.numel() * v.element_size() for k, v in namespace.items()
            if isinstance(v, torch.Tensor) and v.requires_grad and not v.is_leaf}


def read(folder, name):
    return pd.read_csv(folder / name, keep_default_na=False)


def page_data(html_file) -> dict:
    island = re.search(r'<script type="application/json" id="gradmem-data">(.*?)</script>', html_file.read_text(), re.S)
    return json.loads(island.group(1))


@pytest.fixture(scope="module")
def seed_compares(tmp_path_factory):
    out = {}
    for name in SEEDS:
        folder = tmp_path_factory.mktemp("compare") / name
        proc = run_cli("compare", SCENARIOS / f"{name}.py", "-o", folder, check=True)
        out[name] = (folder, proc.stdout)
    return out


@pytest.mark.parametrize("name", SEEDS)
def test_seed_difference_is_exactly_the_retained_gradients(seed_compares, name):
    folder, stdout = seed_compares[name]
    expected = nonleaf_grad_bytes(runpy.run_path(str(SCENARIOS / f"{name}.py")))
    csv = read(folder, "comparison.csv")
    extra = csv[csv["kind"] == "storage"]
    assert set(extra["only_in"]) == {"on"}
    assert dict(zip(extra["name"], extra["nbytes"].astype(int))) == {f"{k}.grad": b for k, b in expected.items()}
    assert set(extra["role"]) == {"retained_grad"}
    total = csv[csv["role"] == "total"].iloc[0]
    assert int(total["end_diff"]) == sum(expected.values())
    assert f"kept {len(expected)} gradients alive until the end of backward: +{sum(expected.values())} B" in stdout
    # alive from their creation to the end: never freed
    on = read(folder / "on", "tensors.csv").set_index("name")
    assert all(on.loc[f"{k}.grad", "free_step"] == "" for k in expected)


@pytest.mark.parametrize("name", SEEDS)
def test_seed_live_bytes_differ_by_the_copies_alive_at_each_step(seed_compares, name):
    folder, _ = seed_compares[name]
    off, on = read(folder / "off", "steps.csv"), read(folder / "on", "steps.csv")
    assert list(off["op"]) == list(on["op"])
    t = read(folder / "on", "tensors.csv")
    copies = t[t["role"] == "retained_grad"]
    for step, live_off, live_on in zip(off["step"], off["live_bytes"], on["live_bytes"]):
        alive = copies[(copies["alloc_step"] <= step)
                       & ((copies["free_step"] == "") | (pd.to_numeric(copies["free_step"], errors="coerce") > step))]
        assert live_on - live_off == alive["nbytes"].sum(), f"step {step}"


@pytest.mark.parametrize("name", SEEDS)
def test_seed_with_retain_off_each_gradient_dies_after_its_consumer(seed_compares, name):
    folder, stdout = seed_compares[name]
    expected = nonleaf_grad_bytes(runpy.run_path(str(SCENARIOS / f"{name}.py")))
    t = read(folder / "off", "tensors.csv").set_index("name")
    nodes = read(folder / "off", "nodes.csv")
    consumer = {g: step for step, gs in zip(nodes["step"], nodes["grads_in"]) for g in gs.split(";") if g}
    last_backward = nodes["step"].max()
    assert not any(n.endswith(".grad") for n in t.index if n != "w.grad")   # nothing retained
    for k in expected:
        g = t.loc[f"grad({k})"]
        if g["created_by"] == "ones_like":   # the gradient backward() starts from: held until it returns
            assert int(g["free_step"]) == last_backward
        else:
            assert int(g["free_step"]) == consumer[f"grad({k})"], k
            assert f"grad({k}) was freed right after {g['freed_after']} (step {g['free_step']}), the node that consumes it" in stdout


def grad_requiring_outputs(fn) -> list[torch.Tensor]:
    """Oracle: every tensor an op returned with a grad_fn while fn ran (plain torch)."""
    seen = []

    class Outputs(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in (out if isinstance(out, (tuple, list)) else [out]):
                if isinstance(t, torch.Tensor) and t.grad_fn is not None and all(t is not s for s in seen):
                    seen.append(t)
            return out

    with Outputs():
        fn()
    return seen


def test_scaled_extra_bytes_are_the_nonleaf_gradients(tmp_path):
    n, d = 20000, 64
    main = runpy.run_path(str(SCENARIOS / "linear_mse.py"))["main"]
    expected = sum(t.numel() * t.element_size() for t in grad_requiring_outputs(lambda: main(n=n, d=d)))
    out = tmp_path / "lin"
    proc = run_cli("compare", SCENARIOS / "linear_mse.py", "-p", f"n={n}", "-p", f"d={d}", "-o", out, check=True)
    csv = read(out, "comparison.csv")
    extra = csv[csv["kind"] == "storage"]
    assert extra["nbytes"].astype(int).sum() == expected > 3 * n * 4   # three gradients of n values, and loss's
    assert int(csv[csv["role"] == "total"].iloc[0]["end_diff"]) == expected
    data = page_data(out / "comparison.html")
    h = data["headline"]
    assert h["kept_bytes"] == expected and h["peak_diff"] == h["extra_at_peak_b_bytes"] > 0
    peak_line = data["answer"][0]["lines"][0]
    assert "The tensors' peak rose from" in peak_line and "that is the whole difference" in peak_line
    assert all(f"`{e['name']}`" in peak_line for e in h["extra_at_peak_b"])
    assert (out / "off" / "report.html").exists() and (out / "on" / "report.html").exists()
    assert "retain_grad kept 4 gradients" in proc.stdout


BLOCK = """import torch
from torch import nn


def main(batch: int = 256, width: int = 128, seed: int = 0):
    torch.manual_seed(seed)
    block = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())
    x = torch.randn(batch, width)
    out = {call}
    loss = out.pow(2).mean()
    loss.backward()
"""


def test_compare_two_traces_with_and_without_checkpoint(tmp_path):
    for name, call in (("plain", "block(x)"), ("checkpointed", "torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)")):
        (tmp_path / f"{name}.py").write_text(BLOCK.format(call=call))
        run_cli("profile", tmp_path / f"{name}.py", "-o", tmp_path / name, "-q", check=True)
    proc = run_cli("compare", tmp_path / "plain" / "trace.jsonl", tmp_path / "checkpointed" / "trace.jsonl",
                   "-o", tmp_path / "cmp", check=True)
    assert "gradmem compare: plain vs checkpointed" in proc.stdout
    assert "Steps that differ most" in proc.stdout
    # the storages only the checkpointed run has are exactly its recomputed ones
    csv = read(tmp_path / "cmp", "comparison.csv")
    extra = csv[csv["kind"] == "storage"]
    ck = read(tmp_path / "checkpointed", "tensors.csv")
    assert set(extra["only_in"]) == {"checkpointed"}
    assert set(extra["storage"].astype(int)) == set(ck.loc[ck["recomputed"] == True, "id"])  # noqa: E712
    # the steps named first differ most, by the two runs' own steps.csv
    a, b = read(tmp_path / "plain", "steps.csv"), read(tmp_path / "checkpointed", "steps.csv")
    diff = (b["live_bytes"] - a["live_bytes"]).abs()
    data = page_data(tmp_path / "cmp" / "comparison.html")
    top = data["differ_most"][0]
    assert abs(top["diff"]) == diff.max() > 0
    assert f"step {top['step_b']} {top['op_b']}" in proc.stdout
    # checkpoint lowered the peak: a block activation was not kept
    assert data["headline"]["peak_diff"] < 0


def test_comparing_a_file_that_is_not_a_trace_names_it(tmp_path):
    bad = tmp_path / "notes.jsonl"
    bad.write_text("hello\n")
    good = tmp_path / "r"
    run_cli("profile", SCENARIOS / "seed_one_weight.py", "-o", good, "-q", check=True)
    proc = run_cli("compare", good / "trace.jsonl", bad, "-o", tmp_path / "cmp")
    assert proc.returncode == 4 and f"{bad}:1: not a gradmem trace" in proc.stderr
    proc = run_cli("compare", good / "trace.jsonl", "-o", tmp_path / "cmp")
    assert proc.returncode != 0 and "trace.jsonl" in proc.stderr


def test_bad_input_fails_before_anything_runs(tmp_path):
    proc = run_cli("compare", SCENARIOS / "linear_mse.py", "-p", "n=many", "-o", tmp_path / "x")
    assert proc.returncode == 2 and not (tmp_path / "x").exists()
    proc = run_cli("compare", "a", "b", "c")
    assert proc.returncode == 2 and "got 3 paths" in proc.stderr
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.txt").write_text("keep me")
    proc = run_cli("compare", SCENARIOS / "seed_one_weight.py", "-o", tmp_path / "mine")
    assert proc.returncode == 2 and (tmp_path / "mine" / "thesis.txt").read_text() == "keep me"


def test_a_failing_run_passes_its_exit_code_on(tmp_path):
    script = tmp_path / "boom.py"
    script.write_text("import torch\nw = torch.ones(2, requires_grad=True)\nraise ValueError('boom')\n")
    proc = run_cli("compare", script, "-o", tmp_path / "out")
    assert proc.returncode == 3
    assert f"{script}:3" in proc.stderr and "--retain-grad off run" in proc.stderr


def test_compare_traces_without_torch(seed_compares, tmp_path):
    folder, _ = seed_compares["seed_two_rows"]
    code = ("import sys; sys.modules['torch'] = None\n"
            "from gradmem.cli import main\n"
            f"main(['compare', r'{folder / 'off' / 'trace.jsonl'}', r'{folder / 'on' / 'trace.jsonl'}', '-o', r'{tmp_path / 'c'}', '-q'])\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "c" / "comparison.csv").read_text() == (folder / "comparison.csv").read_text()


def test_matching_survives_a_shifted_op_counter():
    # GIVEN run B made one extra `mul` first, so its unnamed mul storages are numbered one higher
    cols = ["id", "name", "created_by", "shape", "dtype", "role", "alloc_seq"]
    a = pd.DataFrame([[1, "x", "lift_fresh", "(2,)", "float32", "input", 1],
                      [2, "mul#1", "mul", "(2,)", "float32", "temporary", 5]], columns=cols)
    b = pd.DataFrame([[1, "x", "lift_fresh", "(2,)", "float32", "input", 1],
                      [2, "x.grad", "mul", "(2,)", "float32", "retained_grad", 3],
                      [3, "mul#2", "mul", "(2,)", "float32", "temporary", 5]], columns=cols)
    # WHEN the storages are matched
    m = match_storages(a, b)
    # THEN mul#1 pairs with mul#2 (same op, shape, dtype and role) and only x.grad is left over
    assert sorted(zip(m["a_id"], m["b_id"])) == [(1, 1), (2, 3)]
