"""The profiler never keeps a tensor alive, and the user's own hooks keep working."""
import gc

import pandas as pd
import pytest
import torch

from gradmem.analysis import analyze
from gradmem.capture import Capture


def step_that_drops_a_big_local():
    big = torch.randn(1_000_000, requires_grad=True)
    loss = (big * 3).sum()
    loss.backward()           # gradmem reads this frame's locals here
    del big, loss             # ... and must not keep them alive afterwards
    return torch.ones(1)      # an op after the del, so the free has a step to land on


def test_locals_read_for_names_are_not_kept_alive():
    with Capture() as cap:
        step_that_drops_a_big_local()
    t = analyze(cap.trace).tensors.set_index("name")
    assert t.loc["big", "nbytes"] == 4_000_000
    assert t.loc["big", "free_step"] < t["alloc_step"].max() + 1   # freed inside the capture


def test_storage_freed_when_program_drops_it():
    with Capture() as cap:
        a = torch.randn(1000)
        b = a * 2
        del b
        gc.collect()
        c = a + 1  # noqa: F841
    t = analyze(cap.trace).tensors
    mul = t[t["created_by"] == "mul"].iloc[0]
    assert mul["free_step"] == mul["alloc_step"]   # freed by `del b`, before the next op


def test_outer_user_hooks_still_run_and_are_reported():
    packed = []

    def pack(t):
        packed.append(t.shape)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with Capture() as cap:
            x = torch.randn(5, requires_grad=True)
            (x.sin() * x).sum().backward()
    assert packed, "the user's pack hook must still run under gradmem"
    t = analyze(cap.trace).tensors
    assert (t["saved_by"] != "").any()


def test_nested_captures_both_record():
    with Capture() as outer:
        with Capture() as inner:
            x = torch.randn(4, requires_grad=True)
            (x.exp()).sum().backward()
    for cap in (outer, inner):
        t = analyze(cap.trace).tensors
        assert "ExpBackward0.result" in set(t["saved_by"])


def dead_branch():
    w = torch.randn(1000, requires_grad=True)
    unused = w.exp()          # ExpBackward0 saves its output; backward never reaches it
    w.sin().sum().backward()
    del unused, w
    return torch.ones(1)      # an op after the del, so the frees have a step to land on


def test_saved_output_of_a_branch_backward_never_runs_is_freed():
    # a pack hook that keeps the output itself makes output -> grad_fn -> slot -> output,
    # a cycle that even gc cannot break: the exp result would live forever
    with Capture() as cap:
        dead_branch()
    t = analyze(cap.trace).tensors.set_index("name")
    assert t.loc["unused", "saved_by"] == "ExpBackward0.result"
    assert pd.notna(t.loc["unused", "free_step"]) and pd.notna(t.loc["w", "free_step"])


def modify_saved_then_backward():
    w = torch.randn(4, requires_grad=True)
    y = (w * 2).exp()         # ExpBackward0 saves y
    y.mul_(2)
    y.sum().backward()


def test_inplace_change_to_a_saved_tensor_fails_as_without_gradmem():
    # autograd skips its version check for slots with hooks; gradmem must make it
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        modify_saved_then_backward()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        with Capture():
            modify_saved_then_backward()


class _Cycle:
    def __init__(self, t):
        self.t, self.me = t, self


@pytest.mark.parametrize("engine", ["python", "native"])
def test_the_heap_from_before_is_frozen_and_young_cycles_still_collected(request, engine):
    """During a capture the collector leaves out the objects that existed before it (their
    full walks were a fifth of the Python engine's time); a cycle the program makes and
    drops is still collected, so its tensor is freed inside the capture, as without it."""
    if engine == "native":
        request.getfixturevalue("native")
    assert gc.get_freeze_count() == 0
    old = _Cycle(torch.randn(3000))   # from before the capture, dropped inside it
    with Capture(engine=engine) as cap:
        frozen = gc.get_freeze_count()
        young = _Cycle(torch.randn(1000))
        young.t.sum()
        del young
        for _ in range(2000):   # enough new objects for the interpreter to collect by itself
            _Cycle(None)
        old.t.sum()   # the capture meets it
        del old
        gc.collect()   # the program's own: over the whole heap, as without gradmem
        torch.ones(1)   # an op after the frees, for them to land on
    assert frozen > 0 and gc.get_freeze_count() == 0 and gc.collect is not None
    t = analyze(cap.trace).tensors
    for nbytes in (4000, 12000):
        assert (t["nbytes"] == nbytes).sum() == 1 and pd.notna(t.loc[t["nbytes"] == nbytes, "free_step"]).all(), nbytes


def test_a_heap_the_program_froze_stays_frozen():
    gc.freeze()
    try:
        count = gc.get_freeze_count()
        with Capture():
            torch.ones(2) * 2
        # not unfrozen by gradmem (that empties it); a frozen object may still be freed meanwhile
        assert gc.get_freeze_count() > 0.9 * count > 0
    finally:
        gc.unfreeze()


ENDING = r"""
import gc, torch
from gradmem import gc_pause
from gradmem.capture import Capture
gc_pause.ending_process()          # as the CLI's entry says, its process exiting after the command
with Capture() as cap:
    (torch.ones(3, requires_grad=True) * 2).sum().backward()
held = gc.get_freeze_count()
assert held > 0, "the heap from before the program stays frozen"
trace = cap.trace                  # built in a paused block: what it made is frozen, not collected
assert gc.get_freeze_count() > held and gc.get_count()[0] < 50, (gc.get_freeze_count(), gc.get_count())
class Cycle:
    def __init__(self): self.me = self
import weakref
c = Cycle(); r = weakref.ref(c); del c
gc.collect()
assert r() is None, "cyclic garbage made afterwards is still collected"
print("ok")
"""


def test_a_process_that_ends_after_its_command_freezes_what_gradmem_made():
    """The CLI's policy, in a process of its own (it lasts until the process exits)."""
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-c", ENDING], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
