"""Property tests: Hypothesis writes random small autograd programs (tests/helpers/programs.py) and
every trace gradmem records of them must hold these invariants:

- live bytes are never negative (the running timeline, and every step);
- every storage is allocated once and freed at most once, never before its allocation;
- each saved slot is released at most once, after it was packed, and unpacked only
  between its pack and its release;
- gradmem's allocations and frees are the CPU allocator's own, in order (the only ones it
  misses are kernel scratch: mm's copies, see test_mm_scratch_is_not_seen, and copy_'s
  transpose block); the peaks agree
  within 2%; what the program dropped is freed in both; and the allocator's peak under
  gradmem is the one under a do-nothing dispatch mode;
- the gradients the report shows (the ``value`` of ``t0.grad``, of a retained ``t3.grad``)
  equal ``torch.autograd.grad`` on a fresh run of the same program, outside gradmem.

A failure prints the program as Python source. By default the run is derandomized (the
same 50 programs each time); GRADMEM_HYPOTHESIS=explore (200 new programs) or =thorough
(1000) search further.
"""
from __future__ import annotations

import contextlib
import math
import os
import re

import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, example, given, note, reject, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from gradmem.analysis import analyze
from gradmem.capture import Capture
from oracles import allocator_peak, allocator_record
from programs import BIG, KINDS, SMALL, build

SEED = 0
COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
# the default is the same 50 programs on every run (a shared suite must not flake); the
# others draw new programs and remember failures in .hypothesis/
settings.register_profile("ci", max_examples=50, derandomize=True, database=None, print_blob=True, **COMMON)
settings.register_profile("explore", max_examples=200, **COMMON)
settings.register_profile("thorough", max_examples=1000, **COMMON)
PROFILE = os.environ.get("GRADMEM_HYPOTHESIS", "ci")

specs = st.lists(st.tuples(st.sampled_from(KINDS), st.integers(0, 15), st.integers(0, 15)), min_size=1, max_size=10)
programs = st.builds(build, st.lists(st.integers(0, 3), min_size=1, max_size=3), st.booleans(), specs,
                     st.sampled_from([1, 1, 2]))


# -- running a program ----------------------------------------------------------------------
def namespace(scale: dict) -> dict:
    return {"torch": torch, **scale}


def run_plain(program, scale: dict) -> dict:
    """The program's forward lines outside gradmem; its namespace (raises what torch raises)."""
    ns = namespace(scale)
    torch.manual_seed(SEED)
    forward = [line for line in program.lines if ".backward(" not in line]
    exec(compile("\n".join(forward), "<program>", "exec"), ns)
    return ns


def reference_grads(program) -> dict[str, torch.Tensor | None]:
    """{object name: torch.autograd.grad of the loss w.r.t. it} on a fresh run; None if unused."""
    ns = run_plain(program, SMALL)
    targets = program.leaves + program.retained
    grads = torch.autograd.grad(ns["loss"], [ns[t] for t in targets], allow_unused=True)
    return dict(zip(targets, grads))


def torch_accepts(program) -> bool:
    """Whether torch runs the whole program, backward included, at both scales."""
    try:
        for scale in (SMALL, BIG):
            ns = namespace(scale)
            torch.manual_seed(SEED)
            exec(compile(program.source, "<program>", "exec"), ns)
    except RuntimeError as exc:
        note(f"torch rejects the program: {exc}")
        return False
    return True


class AnyMode(TorchDispatchMode):
    """A dispatch mode that does nothing: what any mode changes, gradmem's changes too (see
    test_a_dispatch_mode_makes_backward_add_out_of_place); gradmem must change nothing more."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


def run_bare(program, scale: dict, mode=None) -> None:
    """The whole program without gradmem, its tensors dropped at the end as under profile()."""
    ns = namespace(scale)
    torch.manual_seed(SEED)
    with mode or contextlib.nullcontext():
        exec(compile(program.source, "<program>", "exec"), ns)
        ns.clear()


def profile(program, scale: dict):
    """gradmem's analysis of the program; the program's tensors are dropped inside the capture."""
    ns = namespace(scale)
    code = compile(program.source, "<program>", "exec")
    torch.manual_seed(SEED)
    with Capture() as cap:
        exec(code, ns)
        ns.clear()
    return analyze(cap.trace)


# -- the invariants -------------------------------------------------------------------------
def check_live_bytes(a) -> None:
    assert (a.timeline["live"] >= 0).all(), a.timeline[a.timeline["live"] < 0]
    live_cols = [c for c in a.steps.columns if c.startswith("live_") or c == "peak_bytes"]
    negative = a.steps[(a.steps[live_cols] < 0).any(axis=1)]
    assert negative.empty, negative


def check_storages(a) -> None:
    alloc, free = a.tables["alloc"], a.tables["free"]
    assert alloc["storage"].is_unique, alloc[alloc["storage"].duplicated(keep=False)]
    assert free["storage"].is_unique, free[free["storage"].duplicated(keep=False)]
    alloc_seq = dict(zip(alloc["storage"], alloc["seq"]))
    for sid, seq in zip(free["storage"], free["seq"]):
        assert sid in alloc_seq, f"S{sid} freed but never allocated"
        assert alloc_seq[sid] < seq, f"S{sid} freed (seq {seq}) before its allocation (seq {alloc_seq[sid]})"


def check_saved_slots(a) -> None:
    saved, released, unpacked = a.tables["saved"], a.tables["released"], a.tables["unpacked"]
    assert saved["pack"].is_unique
    assert released["pack"].is_unique, released[released["pack"].duplicated(keep=False)]
    packed_at = dict(zip(saved["pack"], saved["seq"]))
    released_at = dict(zip(released["pack"], released["seq"]))
    for pack, seq in released_at.items():
        assert pack in packed_at and packed_at[pack] < seq, f"slot {pack} released before it was packed"
    for pack, seq in zip(unpacked["pack"], unpacked["seq"]):
        assert pack in packed_at and packed_at[pack] < seq, f"slot {pack} unpacked before it was packed"
        assert seq < released_at.get(pack, math.inf), f"slot {pack} unpacked after its release"


def check_trace(a) -> None:
    check_live_bytes(a)
    check_storages(a)
    check_saved_slots(a)


# Allocations of at most 8 bytes (one double) are left out of the walk: kernels make a few
# without dispatch (a Python number wrapped as a 0-d tensor in pow's backward; mean's
# internal sum), and equal sizes would make the walk ambiguous. The peak check covers them.
TINY_BYTES = 8
# copy_ of a transposed float32 matrix (AccumulateGrad making w.grad from w.t()'s gradient)
# goes through a 60 x 60 block buffer inside the kernel (ATen's copy_same_type_transpose_).
COPY_BLOCK_BYTES = 60 * 60 * 4
# Kernels that copy a strided or expanded operand into a scratch buffer before calling
# BLAS (mm of sum's expanded gradient): the copy is made and freed inside the kernel, below
# the dispatch mode, so gradmem cannot see it. See test_mm_scratch_is_not_seen.
SCRATCH_OPS = re.compile(r"^(mm|addmm|mv|addmv|bmm|dot|(Mm|Addmm|Mv|Addmv|Bmm|Dot)Backward0)(#\d+)?$")


def gradmem_events(tensors: pd.DataFrame) -> list[tuple[int, int, int, int]]:
    """(seq, storage, delta bytes, step) of every allocation and free above TINY_BYTES, in order."""
    big = tensors[tensors["nbytes"] > TINY_BYTES]
    allocs = [(q, i, n, s) for q, i, n, s in zip(big["alloc_seq"], big["id"], big["nbytes"], big["alloc_step"])]
    freed = big[big["free_seq"].notna()]
    frees = [(int(q), i, -n, int(s)) for q, i, n, s in zip(freed["free_seq"], freed["id"], freed["nbytes"], freed["free_step"])]
    return sorted(allocs + frees)


def unseen_allocations(allocs, tensors: pd.DataFrame, allowed=lambda n, steps: True) -> list[tuple[int, set]] | None:
    """Walk the allocator's record and gradmem's events side by side: gradmem's must be
    the allocator's, in order, with the same pointer for a storage's allocation and free.
    Returns (bytes, steps of gradmem's events around it) for each allocation it did not see,
    choosing among equal-sized allocations a walk where ``allowed(bytes, steps)`` holds for each;
    None if there is no such walk."""
    ours = gradmem_events(tensors)
    theirs = [(ptr, delta) for _, ptr, delta, _ in allocs if abs(delta) > TINY_BYTES]
    around = lambda i: {ours[max(i - 1, 0)][3], ours[min(i, len(ours) - 1)][3]}  # noqa: E731
    unseen = _walk(theirs, ours, 0, 0, {}, frozenset(), lambda n, i: allowed(n, around(i)))
    return None if unseen is None else [(n, around(i)) for n, i in unseen]


def _walk(theirs, ours, j, i, ptr_of, skipped, allowed):
    """Backtracking over which allocations of equal size are gradmem's: the unseen ones as
    (bytes, index of gradmem's next event), or None if no walk fits."""
    while j < len(theirs):
        ptr, delta = theirs[j]
        fits = i < len(ours) and delta == ours[i][2] and (delta > 0 or ptr_of.get(ours[i][1]) == ptr)
        if delta < 0:
            if fits:
                i += 1
            elif ptr in skipped:
                skipped = skipped - {ptr}
            else:
                return None
        else:
            if fits:
                rest = _walk(theirs, ours, j + 1, i + 1, {**ptr_of, ours[i][1]: ptr}, skipped, allowed)
                if rest is not None:
                    return rest
            if not allowed(delta, i):
                return None
            rest = _walk(theirs, ours, j + 1, i, ptr_of, skipped | {ptr}, allowed)
            return None if rest is None else [(delta, i)] + rest
        j += 1
    return [] if i == len(ours) else None


def check_allocator(program) -> None:
    a, allocs = allocator_record(lambda: profile(program, BIG))
    check_same_allocations(a, allocs)
    _, moded = allocator_record(lambda: run_bare(program, BIG, AnyMode()))
    assert allocator_peak(moded) == allocator_peak(allocs), (
        f"allocator peak: {allocator_peak(moded)} B under a do-nothing dispatch mode, "
        f"{allocator_peak(allocs)} B under gradmem")
    left = allocs[-1][3] - (allocs[0][3] - allocs[0][2])
    assert left == 0 and a.timeline["live"].iloc[-1] == 0, (
        f"left allocated: allocator {left} B, gradmem {a.timeline['live'].iloc[-1]} B")
    check_trace(a)


def check_same_allocations(a, allocs) -> None:
    """gradmem's allocations are the allocator's, but for kernel scratch; the peaks agree."""
    ours, theirs = a.summary["peak_bytes"], allocator_peak(allocs)
    op_of = dict(zip(a.steps["step"], a.steps["op"]))
    scratch = lambda n, steps: n == COPY_BLOCK_BYTES or any(SCRATCH_OPS.match(op_of[s]) for s in steps)  # noqa: E731
    unseen = unseen_allocations(allocs, a.tensors, scratch)
    if unseen is None:
        anything = unseen_allocations(allocs, a.tensors)
        assert anything is not None, "gradmem's allocations and frees are not the allocator's"
        raise AssertionError(f"allocations gradmem did not see: {[(n, [op_of[s] for s in st]) for n, st in anything]}")
    note(f"peak: gradmem {ours} B, allocator {theirs} B; kernel scratch unseen: {[n for n, _ in unseen]}")
    if not unseen:
        assert abs(ours - theirs) <= 0.02 * theirs, f"peak: gradmem {ours} B, allocator {theirs} B"


# -- the gradients ----------------------------------------------------------------------------
NUMBER = re.compile(r"[-+]?(?:inf|nan|\d+(?:\.\d*)?(?:e[-+]?\d+)?)")


def values(text: str) -> torch.Tensor:
    return torch.tensor([float(x) for x in NUMBER.findall(text)], dtype=torch.float64)


def grad_rows(tensors: pd.DataFrame, program, obj: str) -> pd.DataFrame:
    names = [f"{alias}.grad" for alias in program.aliases(obj)]
    return tensors[tensors["name"].isin(names)].sort_values("alloc_seq")


def check_grad(tensors: pd.DataFrame, program, obj: str, expected: torch.Tensor | None) -> None:
    rows = grad_rows(tensors, program, obj)
    if expected is None:
        assert rows.empty, f"{obj} gets no gradient, but the report has {list(rows['name'])}"
        return
    assert len(rows), f"no {obj}.grad in the report"
    reported = values(rows.iloc[-1]["value"])
    want = expected.detach().double().flatten() * program.backwards
    assert reported.shape == want.shape and torch.allclose(reported, want, rtol=2e-5, atol=1e-6, equal_nan=True), (
        f"{obj}.grad: report {rows.iloc[-1]['value']}, autograd.grad x{program.backwards} {want.tolist()}")


def check_grads(program) -> None:
    expected = reference_grads(program)
    a = profile(program, SMALL)
    check_trace(a)
    for obj, grad in expected.items():
        check_grad(a.tensors, program, obj, grad)


def check_rejected_alike(program) -> None:
    """A program torch rejects fails under gradmem too (not silently, with wrong numbers)."""
    for scale in (SMALL, BIG):
        with pytest.raises(RuntimeError):
            profile(program, scale)


@settings.get_profile(PROFILE)
@given(programs)
# the minimal programs of what the properties found; each is fixed or explained
@example(build([0], False, [("unary", 0, 1), ("unary", 0, 0)], 1))   # unused exp output leaked
@example(build([0], False, [("reduce", 0, 0)], 1))                   # t0.grad value uninitialized
@example(build([0], False, [("unary", 0, 0)], 2))                    # t0.grad value: first backward
@example(build([3], False, [("matmul", 0, 0)], 1))                   # mm scratch (see below)
@example(build([0], False, [("unary", 0, 1), ("inplace", 1, 1)], 1))  # exp result modified in place
@example(build([3, 0], False, [("matmul", 1, 0)], 2))               # mm scratch of equal size
@example(build([0], False, [("mul", 0, 0)], 1))                      # any mode adds out of place
@example(build([3], False, [("view", 0, 0), ("add", 1, 1)], 1))       # copy_'s transpose block
def test_random_programs(program):
    note("program:\n" + program.source)
    if not torch_accepts(program):
        check_rejected_alike(program)
        reject()
    check_grads(program)
    check_allocator(program)


def test_mm_scratch_is_not_seen():
    """Known gap: sum's backward hands mm an expanded gradient (stride 0); the CPU mm kernel
    copies it to a contiguous scratch buffer, made and freed inside the kernel, below the
    dispatch mode. gradmem's peak misses it; the allocator sees it. Seeing it needs
    allocator readings per step (the "unattributed" role), which capture does not take yet."""
    program = build([2], False, [("matmul", 0, 0)], 1)     # t1 = t0 @ t0.t(); t1.sum().backward()
    a, allocs = allocator_record(lambda: profile(program, BIG))
    grad_bytes = BIG["N"] * BIG["N"] * 4                  # the (N, N) gradient of t1, made contiguous
    unseen = unseen_allocations(allocs, a.tensors)
    assert [n for n, _ in unseen] == [grad_bytes, grad_bytes]   # one copy per mm in MmBackward0
    assert 0 < allocator_peak(allocs) - a.summary["peak_bytes"] <= grad_bytes   # 57352 vs 49160 B


def test_a_dispatch_mode_makes_backward_add_out_of_place():
    """Known perturbation: with any TorchDispatchMode active, autograd treats every tensor as
    a subclass (isTensorSubclassLike), so the engine adds a gradient arriving from two paths
    out of place. t0 * t0 sends t0 two gradients: without a mode the second is added into
    the first; under gradmem (or any mode) the sum is a new buffer, one gradient more at
    the peak than the program without gradmem."""
    program = build([0], False, [("mul", 0, 0)], 1)       # t1 = t0 * t0; t1.sum().backward()
    grad_bytes = BIG["M"] * BIG["N"] * 4
    _, bare = allocator_record(lambda: run_bare(program, BIG))
    _, moded = allocator_record(lambda: run_bare(program, BIG, AnyMode()))
    a, profiled = allocator_record(lambda: profile(program, BIG))
    assert allocator_peak(moded) == allocator_peak(profiled) == a.summary["peak_bytes"]
    assert allocator_peak(profiled) - allocator_peak(bare) == grad_bytes
