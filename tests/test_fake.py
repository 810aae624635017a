"""--fake: the same capture on fake tensors. The trace must equal a real run's (values and
times aside), nothing of the program's size is allocated, and code that needs values stops
with an error naming the line."""
import json

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
}
DROP = {"value"}   # fake tensors have no values
# Known kernel differences, measured: {scenario: (op, real nbytes)}. The CPU mse_loss kernel
# returns its mean as a 0-dim view of its per-element buffer (batch * 4 B); fake tensors
# run the meta kernel, whose result has its own 4 B storage.
KERNEL_SCRATCH = {"mlp": ("mse_loss", SMALL["mlp"]["batch"] * 4)}


def comparable(trace, scratch=None) -> list[tuple]:
    """Every event but its time and values, in order; ``scratch`` (op, nbytes) reads the
    output of ``op`` as its fake size."""
    out = []
    for e in trace.events:
        data = {k: v for k, v in e.data.items() if k not in DROP}
        if scratch and e.kind == "alloc" and (data["op"], data["nbytes"]) == scratch:
            data["nbytes"] = 4
        out.append((e.seq, str(e.kind), e.step, data))
    return out


def profile(name: str, fake: bool, **extra):
    sc = load_scenario(SCENARIOS / f"{name}.py")
    cap, failure = run_scenario(sc, {**SMALL[name], **extra}, fake=fake)
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
    for key in ("peak_step", "peak_op", "backward_peak_step"):
        assert a_fake.summary[key] == a_real.summary[key], key
    assert a_real.summary["peak_bytes"] - a_fake.summary["peak_bytes"] == extra
