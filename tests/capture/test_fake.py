"""--fake: the same capture on fake tensors. The trace must equal a real run's (values and
times aside), nothing of the program's size is allocated, and code that needs values stops
with an error naming the line."""
import json

import pandas as pd
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensor

from conftest import SCENARIOS, run_cli
from gradmem.analysis import analyze
from gradmem.capture import Capture
from gradmem.scenario import load_scenario, run_scenario

# every bundled scenario, at sizes that run in a blink for real
SMALL = {
    "seed_one_weight": {}, "seed_two_weights": {}, "seed_two_rows": {},
    "one_weight_scaled": {"n": 1000},
    "two_weights_scaled": {"d": 1000},
    "linear_mse": {"n": 300, "d": 16},
    "mlp": {"batch": 64, "width": 32, "depth": 2, "features": 16},
    "conv_bn": {"batch": 4, "channels": 4, "size": 8},
}
DROP = {"value", "values_in", "values_out", "ptr"}   # fake tensors have no values, and no addresses worth comparing
# the allocator's record and RSS samples exist only for real runs (RSS on its own clock)
GROUND_KINDS = {"allocator", "clock", "rss", "device_memory"}
# Known kernel differences, measured: {scenario: (op, real nbytes)}. The CPU mse_loss kernel
# returns its mean as a 0-dim view of its per-element buffer (batch * 4 B); fake tensors
# run the meta kernel, whose result has its own 4 B storage.
KERNEL_SCRATCH = {"mlp": ("mse_loss", SMALL["mlp"]["batch"] * 4), "conv_bn": ("mse_loss", SMALL["conv_bn"]["batch"] * 4)}


def comparable(trace, scratch=None) -> list[tuple]:
    """Every event but its time and values, in order; ``scratch`` (op, nbytes) reads the
    output of ``op`` as its fake size."""
    out = []
    for e in trace.events:
        if e.kind in GROUND_KINDS:
            continue
        data = {k: v for k, v in e.data.items() if k not in DROP}
        if scratch and e.kind == "alloc" and (data["op"], data["nbytes"]) == scratch:
            data["nbytes"] = 4
        out.append((str(e.kind), e.step, data))
    return out


def profile(name: str, fake: bool, engine: str = "python", **extra):
    """A fake run always records on the Python engine (fake tensors reach no allocator), so
    the real run it is held to event by event records there too; the engines' agreement
    with each other is tests/capture/test_native_engine.py's."""
    sc = load_scenario(SCENARIOS / f"{name}.py")
    cap, failure = run_scenario(sc, {**SMALL[name], **extra}, fake=fake, engine=engine)
    assert failure is None, failure
    return cap.trace


def test_every_bundled_scenario_is_covered():
    assert set(SMALL) == {p.stem for p in SCENARIOS.glob("*.py")}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_fake_trace_equals_the_real_one(name):
    real, fake = profile(name, fake=False), profile(name, fake=True)
    assert fake.meta.mode == "fake" and real.meta.mode == "real"
    scratch = KERNEL_SCRATCH.get(name)
    assert comparable(fake) == comparable(real, scratch)
    a_real, a_fake = analyze(real), analyze(fake)
    cols = ["id", "name", "role", "saved_by", "unpacked_by", "alloc_step", "free_step", "released_step"]
    assert a_fake.tensors[cols].equals(a_real.tensors[cols])
    extra = scratch[1] - 4 if scratch else 0
    assert (a_real.tensors["nbytes"] - a_fake.tensors["nbytes"]).sum() == extra
    # the real run's peak_bytes is the allocator's (kernel scratch in it); fake tensors have
    # no allocator, so the estimate is held to the real run's tracked timeline
    for key in ("tracked_peak_step", "tracked_peak_op", "backward_peak_step"):
        assert a_fake.summary[key] == a_real.summary[key], key
    assert a_fake.summary["peak_bytes"] == a_fake.summary["tracked_peak_bytes"]
    assert a_real.summary["tracked_peak_bytes"] - a_fake.summary["peak_bytes"] == extra


def test_fake_bytes_are_exact_and_nothing_real_is_allocated():
    n, d = 50_000_000, 64                          # x would be 12.8 GB for real
    with Capture(fake=True) as cap:
        x = torch.randn(n, d)
        w = torch.randn(d, requires_grad=True)
        ((torch.randn(n) - x @ w) ** 2).mean().backward()
        assert isinstance(x, FakeTensor) and isinstance(w.grad, FakeTensor)
        del x, w
    t = analyze(cap.trace).tensors
    assert t.loc[t["nbytes"].idxmax(), "nbytes"] == n * d * 4
    assert analyze(cap.trace).summary["peak_bytes"] >= n * d * 4 + 2 * n * 4
    assert set(t.loc[t["nbytes"] <= 64, "value"]) == {"(fake: no data)"}


def test_factories_make_fake_tensors_and_storages_die_when_dropped():
    with Capture(fake=True) as cap:
        a = torch.tensor([[10., 15.], [30., 40.]])
        b = torch.zeros(1000)
        assert isinstance(a, FakeTensor) and isinstance(b, FakeTensor)
        assert b.untyped_storage().nbytes() == 4000
        del b                                      # freed here, before the next op
        torch.ones(1)
    t = analyze(cap.trace).tensors.set_index("created_by")
    assert t.loc["zeros", "free_step"] == t.loc["zeros", "alloc_step"]
    assert t.loc["ones", "alloc_step"] == t.loc["zeros", "alloc_step"] + 1
    assert t["free_step"].isna()["lift_fresh"]    # `a` is still held


def test_summary_marks_the_estimate(tmp_path):
    out = tmp_path / "r"
    proc = run_cli("profile", SCENARIOS / "seed_two_rows.py", "--fake", "-o", out, check=True)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["estimate"] is True and summary["mode"] == "fake"
    assert proc.stdout.startswith("gradmem: ESTIMATE (fake tensors, nothing allocated): seed_two_rows")
    real = tmp_path / "real"
    run_cli("profile", SCENARIOS / "seed_two_rows.py", "-o", real, "-q", check=True)
    assert json.loads((real / "summary.json").read_text())["estimate"] is False


NEEDS_ITEM = """\
import torch
x = torch.randn(1000, 8)
w = torch.randn(8, requires_grad=True)
loss = ((x @ w) ** 2).mean()
loss.backward()
print(f"loss {loss.item():.3f}")
"""

NEEDS_NONZERO = """\
import torch
x = torch.randn(1000, requires_grad=True)
(x * 2).sum().backward()
positive = x[x > 0]
"""

PRINTS = """\
import torch
x = torch.randn(3, requires_grad=True)
(x * 2).sum().backward()
print(x)
"""


@pytest.mark.parametrize("source, line, needed", [(NEEDS_ITEM, 6, "a tensor's value (.item()"),
                                                  (NEEDS_NONZERO, 4, "a shape that depends on the values"),
                                                  (PRINTS, 4, "a tensor's values (printing it)")])
def test_code_that_needs_data_stops_with_its_line(tmp_path, source, line, needed):
    script = tmp_path / "needs_data.py"
    script.write_text(source)
    out = tmp_path / "out"
    proc = run_cli("profile", script, "--fake", "-o", out)
    assert proc.returncode == 3, proc.stderr
    assert f"{script}:{line}: this line needs {needed}" in proc.stderr
    assert "Profile a smaller size for real (without --fake" in proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "partial" and summary["estimate"] is True
    assert run_cli("profile", script, "-o", tmp_path / "real", "-q").returncode == 0   # fine for real


def test_fake_cuda_on_a_cpu_only_torch_estimates_with_cpu_fake_tensors(tmp_path):
    if torch.version.cuda is not None:
        pytest.skip("this torch is built with CUDA: the real fake-CUDA path runs")
    out = tmp_path / "out"
    proc = run_cli("profile", SCENARIOS / "mlp.py", "--fake", "--device", "cuda", "-p", "batch=64", "-o", out)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["device"] == "cuda" and summary["estimate"]
    assert any("built without CUDA" in n for n in summary["notes"])
    est = summary["cuda_allocator"]
    assert est["reserved_peak_bytes"] >= est["allocated_peak_bytes"] >= summary["peak_bytes"]
    tensors = pd.read_csv(out / "tensors.csv")
    assert set(tensors["device"]) == {"cuda:0"}
    # the same bytes as the CPU estimate
    cpu = tmp_path / "cpu"
    run_cli("profile", SCENARIOS / "mlp.py", "--fake", "-p", "batch=64", "-o", cpu, "-q", check=True)
    assert json.loads((cpu / "summary.json").read_text())["peak_bytes"] == summary["peak_bytes"]


def test_linear_mse_estimate_is_exact_at_a_size_that_fits_no_machine_here():
    n, d = 100_000_000, 256                        # x alone is 102 GB
    sc = load_scenario(SCENARIOS / "linear_mse.py")
    cap, failure = run_scenario(sc, {"n": n, "d": d}, fake=True)
    assert failure is None
    s = analyze(cap.trace).summary
    # at PowBackward0: x, w, and eight n-vectors (y, output, error, error_squared, their
    # two gradients in flight, and pow/mul scratch), plus loss and its 1-element gradient
    assert s["peak_bytes"] == n * d * 4 + 8 * n * 4 + d * 4 + 2 * 4
    assert (s["peak_op"], s["estimate"]) == ("PowBackward0", True)
