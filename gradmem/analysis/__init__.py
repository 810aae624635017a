"""Analysis: events become DataFrames, then pure passes. Imports no torch.

``analyze(trace)`` is the recipe: frames by kind, node names, the per-storage table with
roles, steps with live bytes by role, the per-node table, the summary.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from ..trace import Trace
from .derivation import node_rules, with_rules
from .frames import by_kind, events_table, pairs
from .ground import reconcile
from .naming import node_names, storage_names
from .nodes import annotate_steps, nodes_table
from .story import story
from .storages import tensors_table
from .summary import summarize
from .timeline import deltas, live_by_step, steps_frame


@dataclass
class Analysis:
    trace: Trace
    tensors: pd.DataFrame
    steps: pd.DataFrame
    nodes: pd.DataFrame
    summary: dict
    frames: dict = field(repr=False)
    node_names: dict = field(repr=False)
    timeline: pd.DataFrame = field(repr=False)   # running live bytes after every alloc/free
    rules: dict = field(default_factory=dict, repr=False)   # node -> NodeRule: its chain-rule step

    @property
    def events(self) -> pd.DataFrame:
        return events_table(self.frames)

    def story(self) -> list[str]:
        return story(self.trace, self.tensors, self.steps, self.frames, self.node_names)


def analyze(trace: Trace) -> Analysis:
    frames = by_kind(trace)
    snames = storage_names(frames)
    nnames = node_names(frames["node"], snames)
    steps = steps_frame(frames, nnames)
    phase = steps.set_index("step")["phase"]
    op = pairs(steps["step"], steps["op"])
    tensors = tensors_table(frames, phase, op, nnames, snames)
    d = deltas(tensors)
    steps = annotate_steps(live_by_step(steps, d), frames, tensors)
    rules = node_rules(frames, snames)
    nodes = with_rules(nodes_table(steps, frames, tensors), rules)
    steps, ground = reconcile(frames, steps, tensors)
    summary = {**summarize(trace, tensors, steps, d), **ground}
    return Analysis(trace, tensors, steps, nodes, summary, frames, nnames, d, rules)


__all__ = ["Analysis", "analyze", "storage_names"]
