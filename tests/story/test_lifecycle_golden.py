"""The two-rows seed's whole story, one line per event, as golden text.

Read it top to bottom: x is saved by MvBackward0 (an input: no new bytes), error by
PowBackward0; output by nothing. In backward each flowing gradient is freed right after
the node that consumes it; error's slot is released after PowBackward0 but its storage
stays (the script holds `error`); the retain_grad() copies stay to the end.
"""
from pathlib import Path

import pytest

from gradmem.analysis import analyze
from gradmem.scenario import load_scenario, run_scenario

ROOT = Path(__file__).resolve().parents[2]

GOLDEN = """
STEP 1 setup lift_fresh
ALLOC S1 x (2, 2) float32 16 B [input] = [[10, 15], [30, 40]]
STEP 2 setup lift_fresh
ALLOC S2 y (2,) float32 8 B [input] = [20, 25]
STEP 3 setup lift_fresh
ALLOC S3 w (2,) float32 8 B [parameter] = [5, 6]
STEP 4 forward mv
SAVED S1 x by MvBackward0.self
ALLOC S4 output (2,) float32 8 B [intermediate] = [140, 390]
STEP 5 forward sub
ALLOC S5 error (2,) float32 8 B [activation] = [-120, -365]
STEP 6 forward pow
SAVED S5 error by PowBackward0.self
ALLOC S6 error_squared (2,) float32 8 B [intermediate] = [14400, 133225]
STEP 7 forward mean
ALLOC S7 loss () float32 4 B [intermediate] = 73812.5
BACKWARD begin 1
STEP 8 backward ones_like
ALLOC S8 grad(loss) () float32 4 B [gradient] = 1
STEP 9 backward MeanBackward0
ALLOC S9 loss.grad () float32 4 B [retained_grad] = 1
ALLOC S10 grad(error_squared) (2,) float32 8 B [gradient] = [0.5, 0.5]
NODE MeanBackward0: S8 grad(loss) -> S10 grad(error_squared)
STEP 10 backward PowBackward0
ALLOC S11 error_squared.grad (2,) float32 8 B [retained_grad] = [0.5, 0.5]
UNPACK S5 error in PowBackward0
ALLOC S12 pow#2 (2,) float32 8 B [temporary] = [-120, -365]
ALLOC S13 mul#1 (2,) float32 8 B [temporary] = [-240, -730]
ALLOC S14 grad(error) (2,) float32 8 B [gradient] = [-120, -365]
FREE S13 mul#1 after PowBackward0
FREE S12 pow#2 after PowBackward0
NODE PowBackward0: S10 grad(error_squared) -> S14 grad(error)
FREE S10 grad(error_squared) after PowBackward0
RELEASE S5 error slot PowBackward0.self
STEP 11 backward SubBackward0
ALLOC S15 error.grad (2,) float32 8 B [retained_grad] = [-120, -365]
ALLOC S16 grad(output) (2,) float32 8 B [gradient] = [120, 365]
NODE SubBackward0: S14 grad(error) -> S16 grad(output)
FREE S14 grad(error) after SubBackward0
STEP 12 backward MvBackward0
ALLOC S17 output.grad (2,) float32 8 B [retained_grad] = [120, 365]
UNPACK S1 x in MvBackward0
ALLOC S18 w.grad (2,) float32 8 B [param_grad] = [12150, 16400]
NODE MvBackward0: S16 grad(output) -> S18 w.grad
FREE S16 grad(output) after MvBackward0
RELEASE S1 x slot MvBackward0.self
STEP 13 backward AccumulateGrad(w)
GRAD S18 w.grad for S3 w
NODE AccumulateGrad(w): S18 w.grad -> -
FREE S8 grad(loss) when backward() returned
BACKWARD end 1
RETAIN S17 output.grad for S4 output
RETAIN S15 error.grad for S5 error
RETAIN S11 error_squared.grad for S6 error_squared
RETAIN S9 loss.grad for S7 loss
STEP 14 after_backward (after backward)
"""


@pytest.fixture(scope="module", params=["python", "native"])
def two_rows(request):
    """The story on each engine: the same text, event for event."""
    if request.param == "native":
        request.getfixturevalue("native")
    cap, failure = run_scenario(load_scenario(ROOT / "scenarios" / "seed_two_rows.py"), {}, engine=request.param)
    assert failure is None
    return analyze(cap.trace)


def test_story_matches_golden(two_rows):
    assert two_rows.story() == GOLDEN.strip().splitlines()


def row(analysis, name):
    t = analysis.tensors
    return t[t["name"] == name].iloc[0]


def test_x_saved_at_zero_new_bytes(two_rows):
    x = row(two_rows, "x")
    assert x["role"] == "input" and x["saved_by"] == "MvBackward0.self"
    # saving x allocated nothing: no storage was created in the step that saved it
    mv = two_rows.steps.set_index("step").loc[4]
    assert mv["saved"] == "x" and mv["allocated"] == "output"


def test_error_slot_released_after_pow_backward_but_storage_stays(two_rows):
    err = row(two_rows, "error")
    pow_step = two_rows.nodes.set_index("name").loc["PowBackward0", "step"]
    assert err["saved_by"] == "PowBackward0.self" and err["unpacked_by"] == "PowBackward0"
    assert err["released_step"] == pow_step
    assert pd_isna(err["free_step"])   # the script still holds `error`


def test_output_saved_by_nothing(two_rows):
    assert row(two_rows, "output")["saved_by"] == ""
    assert row(two_rows, "output")["role"] == "intermediate"


def test_flowing_gradients_freed_right_after_their_consumer(two_rows):
    nodes = two_rows.nodes.set_index("name")
    for grad, consumer in [("grad(error_squared)", "PowBackward0"), ("grad(error)", "SubBackward0"),
                           ("grad(output)", "MvBackward0")]:
        r = row(two_rows, grad)
        assert r["role"] == "gradient"
        assert r["free_step"] == nodes.loc[consumer, "step"] and r["freed_after"] == consumer
        assert grad in nodes.loc[consumer, "grads_in"]


def test_retained_grads_alive_at_end(two_rows):
    for name in ("loss.grad", "error_squared.grad", "error.grad", "output.grad"):
        r = row(two_rows, name)
        assert r["role"] == "retained_grad" and pd_isna(r["free_step"])
    assert two_rows.summary["bytes_by_role_at_end"]["retained_grad"] == 4 + 8 + 8 + 8


def pd_isna(v):
    import pandas as pd
    return bool(pd.isna(v))
