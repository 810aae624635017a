"""Training steps: which backward call a storage belongs to, which call the answer speaks
of, and how much of a set of storages was alive at once.

A program that trains for several steps runs backward once per step. A sentence that adds
up the storages of every step ("saved 103 tensors; 334 MiB") reads as memory held at once,
and it never was: each step's activations are freed by its own backward. So the answer
speaks of one training step, the one the peak happens in, and says so; and where it gives
the bytes of a set of storages that did not all live together, it gives the most that was
alive at one moment.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .summary import Peak


@dataclass(frozen=True)
class Described:
    """The training step (backward call, 1-based) the answer speaks of, of ``calls``."""
    call: int
    calls: int

    @property
    def several(self) -> bool:
        return self.calls > 1


def _begins(tables: dict) -> np.ndarray:
    return np.sort(tables["backward_begin"]["seq"].to_numpy(dtype="int64"))


def training_step_of(tables: dict, seqs) -> np.ndarray:
    """For each seq, the backward call (1, 2, ...) that follows it: the training step a
    forward storage belongs to. Past the last backward: one more than the number of calls."""
    return np.searchsorted(_begins(tables), np.asarray(seqs, dtype="int64"), side="left") + 1


def call_of_storages(tensors: pd.DataFrame, steps: pd.DataFrame, tables: dict) -> pd.Series:
    """Per storage, its training step: the call whose backward made it (a gradient, a
    ``.grad``), else the call that follows its allocation (what a forward pass made is
    for the backward after it). Storages from before the capture: 0."""
    by_step = steps.set_index("step")["backward"].astype("Float64")
    made_in = tensors["alloc_step"].map(by_step).astype("Float64")
    following = pd.Series(training_step_of(tables, tensors["alloc_seq"].clip(lower=0)), index=tensors.index)
    call = made_in.fillna(following.astype("Float64")).astype("int64")
    return call.where(tensors["alloc_seq"] >= 0, 0)


def described_call(tables: dict, steps: pd.DataFrame, peak: Peak) -> Described:
    """The training step of the peak: the backward call it happens in, or, before or after
    backward, the step whose forward or optimizer it is part of."""
    calls = int(len(tables["backward_begin"]))
    if calls <= 1:
        return Described(1, max(calls, 1))
    backward = steps.set_index("step")["backward"].get(peak.step)
    if backward is not None and pd.notna(backward):
        return Described(int(backward), calls)
    begun = int(np.searchsorted(_begins(tables), peak.seq, side="right"))   # calls begun by then
    following = begun + 1 if peak.phase in ("setup", "forward") else begun
    return Described(int(min(max(following, 1), calls)), calls)


def most_at_once(rows: pd.DataFrame) -> int:
    """The most bytes of these storages alive at one moment (after any one event)."""
    if not len(rows):
        return 0
    alloc = rows["alloc_seq"].to_numpy(dtype="int64")
    free = rows["free_seq"].astype("float").fillna(np.inf).to_numpy()
    size = rows["nbytes"].to_numpy(dtype="int64")
    when = np.concatenate([alloc.astype(float), free])
    delta = np.concatenate([size, -size])
    order = np.lexsort((delta, when))   # at one seq, a free before an allocation
    return int(max(np.cumsum(delta[order]).max(), 0))
