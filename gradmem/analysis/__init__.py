"""Analysis: events become DataFrames, then pure passes. Imports no torch.

``analyze(trace)`` is the recipe: frames by kind, node names, the per-storage table with
roles, steps with live bytes by role, the per-node table, the summary.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from ..trace import Trace
from .frames import by_kind, events_table, pairs
from .ground import reconcile
from .modules import (activations_by_module, module_outputs, modules_at_peak, modules_table, node_origins,
                      spans, storage_origins)
from .naming import module_labels, node_names, op_names, storage_names
from .nodes import annotate_steps, nodes_table
from .story import story
from .storages import tensors_table
from .summary import peak_of, summarize
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
    modules: pd.DataFrame = field(default_factory=pd.DataFrame)   # one row per nn.Module
    module_spans: list = field(default_factory=list, repr=False)   # each module call: module, depth, t0_ns, t1_ns

    @property
    def events(self) -> pd.DataFrame:
        return events_table(self.frames)

    def story(self) -> list[str]:
        return story(self.trace, self.tensors, self.steps, self.frames, self.node_names)


def analyze(trace: Trace) -> Analysis:
    frames = by_kind(trace)
    module_of, source_of = storage_origins(frames)
    snames = storage_names(frames, module_labels(frames, module_of, module_outputs(frames)))
    nnames = node_names(frames["node"], snames)
    steps = steps_frame(frames, nnames)
    phase = steps.set_index("step")["phase"]
    op = pairs(steps["step"], steps["op"])
    origins = {"module": module_of, "source": source_of, "op_name": op_names(frames)}
    tensors = tensors_table(frames, phase, op, nnames, snames, origins)
    d = deltas(tensors)
    steps = annotate_steps(live_by_step(steps, d), frames, tensors)
    nodes = nodes_table(steps, frames, tensors)
    node_module, node_source = node_origins(frames)
    nodes["module"] = nodes["node"].map(node_module).fillna("")
    nodes["source"] = nodes["node"].map(node_source).fillna("")
    steps, ground = reconcile(frames, steps, tensors)
    summary = {**summarize(trace, tensors, steps, d), **ground}
    _, peak_seq, _ = peak_of(d, dict(zip(steps["step"], steps["phase"])))
    modules = modules_table(frames, tensors, peak_seq)
    summary["modules_at_peak"] = modules_at_peak(modules)
    summary["activations_by_module"] = activations_by_module(frames, tensors, modules)
    return Analysis(trace, tensors, steps, nodes, summary, frames, nnames, d, modules, spans(frames))


__all__ = ["Analysis", "analyze", "storage_names"]
