"""CUDA: every bundled scenario runs on the GPU, and the caching allocator's readings are
reported after every step. Skipped where there is no GPU."""
import json

import pandas as pd
import pytest
import torch

from conftest import SCENARIOS, run_cli
from gradmem.analysis import analyze
from gradmem.capture import Capture

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

SMALL = {"linear_mse": ["n=10000", "d=64"], "mlp": ["batch=256", "width=128"], "one_weight_scaled": ["n=100000"],
         "two_weights_scaled": ["d=100000"]}
SCENARIO_NAMES = sorted(p.stem for p in SCENARIOS.glob("*.py"))


@needs_cuda
@pytest.mark.parametrize("name", SCENARIO_NAMES)
def test_every_bundled_scenario_runs_on_cuda(tmp_path, name):
    params = [a for p in SMALL.get(name, []) for a in ("-p", p)]
    run_cli("profile", SCENARIOS / f"{name}.py", "--device", "cuda", *params, "-o", tmp_path, "-q", check=True)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["device"] == "cuda" and summary["status"] == "complete"
    assert summary["allocator"]["source"].startswith("cuda")
    steps = pd.read_csv(tmp_path / "steps.csv")
    assert (steps["reserved_bytes"] >= steps["allocator_bytes"]).all()
    assert (steps["live_bytes"] + steps["live_unattributed"] == steps["allocator_bytes"]).all()


@needs_cuda
def test_cuda_readings_match_memory_allocated_and_backward_thread_is_ordered():
    torch.cuda.synchronize()
    with Capture(params={"device": "cuda"}) as cap:
        x = torch.randn(4096, 256, device="cuda")
        w = torch.randn(256, device="cuda", requires_grad=True)
        ((x @ w) ** 2).mean().backward()
        end = torch.cuda.memory_allocated()
    a = analyze(cap.trace)
    seqs = [e.seq for e in cap.trace.events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    last = [e for e in cap.trace.events if e.kind == "device_memory"][-1]
    assert last.get("allocated") == end
    assert (a.steps["live_unattributed"] >= 0).all()    # the caching allocator rounds blocks up
    assert (a.steps["reserved_bytes"] >= a.steps["allocator_bytes"]).all()
    assert a.summary["allocator"]["reserved_peak_bytes"] >= a.summary["allocator"]["peak_bytes"]
