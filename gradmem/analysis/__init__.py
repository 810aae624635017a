"""Analysis: events become DataFrames, then pure passes. Imports no torch.

``analyze(trace)`` is the recipe: tables by kind, node names, the saved slots, the
per-storage table with roles, steps with live bytes by role, the per-node table, the peak,
the summary, and the facts the reports word (which node consumed each gradient, what was
alive at the peak and why, the storages the plain answer names). Every fact is worked out
here once; render only formats the ``Analysis`` (see docs/reports.md, "The analysis, from
Python").
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from ..gc_pause import paused
from ..trace import Trace
from .births import late_births
from .derivation import node_rules, with_rules
from .tables import by_kind, events_table, pairs
from .answer_facts import AnswerFacts, AtPeak, answer_facts, at_peak
from .training_steps import call_of_storages, described_call
from .consumers import Consumer, gradient_consumers
from .ground import reconcile
from .headline import true_peak
from .modules import (activations_by_module, module_outputs, modules_at_peak, modules_table, node_origins,
                      spans, storage_origins)
from .naming import module_labels, node_names, op_names, storage_names
from .nodes import annotate_steps, nodes_table
from .slots import Slots, build_slots
from .story import story
from .storages import tensors_table
from .summary import Peak, Summary, find_peak, summarize
from .timeline import deltas, live_by_step, steps_frame


@dataclass
class Analysis:
    trace: Trace
    tensors: pd.DataFrame
    steps: pd.DataFrame
    nodes: pd.DataFrame
    summary: Summary
    peak: Peak                                   # the tracked peak (the chart's), with its place in the event log
    backward_peak: Peak                          # the highest point within backward
    slots: Slots = field(repr=False)             # saved slots: pack -> storage, owner, events
    consumers: dict = field(repr=False)          # {gradient storage: Consumer}
    at_peak: AtPeak = field(repr=False)          # what was alive at the tracked peak, and why
    answer_facts: AnswerFacts = field(repr=False)   # the storages the plain answer speaks of
    tables: dict = field(repr=False)
    node_names: dict = field(repr=False)
    timeline: pd.DataFrame = field(repr=False)   # running live bytes after every alloc/free
    modules: pd.DataFrame = field(default_factory=pd.DataFrame)   # one row per nn.Module
    module_spans: list = field(default_factory=list, repr=False)   # each module call: module, depth, t0_ns, t1_ns
    rules: dict = field(default_factory=dict, repr=False)   # node -> NodeRule: its chain-rule step

    @property
    def events(self) -> pd.DataFrame:
        return events_table(self.tables)

    def story(self) -> list[str]:
        return story(self.trace, self.tensors, self.steps, self.slots, self.node_names)


def analyze(trace: Trace) -> Analysis:
    with paused():   # the trace's objects, walked by every full collection (gradmem.gc_pause)
        return _analyze(trace)


def _analyze(trace: Trace) -> Analysis:
    tables = late_births(by_kind(trace))
    module_of, source_of = storage_origins(tables)
    snames = storage_names(tables, module_labels(tables, module_of, module_outputs(tables)))
    nnames = node_names(tables["node"], snames)
    slots = build_slots(tables, nnames)
    steps = steps_frame(tables, nnames)
    phase = steps.set_index("step")["phase"]
    op = pairs(steps["step"], steps["op"])
    origins = {"module": module_of, "source": source_of, "op_name": op_names(tables)}
    tensors = tensors_table(tables, phase, op, nnames, snames, slots, origins)
    d = deltas(tensors)
    steps = annotate_steps(live_by_step(steps, d), tables, tensors, slots)
    rules = node_rules(tables, snames)
    nodes = with_origins(with_rules(nodes_table(steps, tables, tensors, slots), rules), tables)
    steps, ground = reconcile(tables, steps, tensors)
    peak, backward_peak = find_peak(d, steps), find_peak(d, steps, "backward")
    true = true_peak(peak, ground["allocator"], steps, d)
    described, calls = described_call(tables, steps, true), call_of_storages(tensors, steps, tables)
    modules = modules_table(tables, tensors, true.seq, described, calls)
    by_module = {"modules_at_peak": modules_at_peak(modules),
                 "activations_by_module": activations_by_module(tensors, modules, described, calls)}
    summary = summarize(trace, tensors, steps, true, backward_peak, ground, tracked=peak, by_module=by_module)
    consumers = gradient_consumers(tables["node_end"], nnames)
    return Analysis(trace, tensors, steps, nodes, summary, peak, backward_peak, slots, consumers,
                    at_peak(tensors, steps, tables, slots, consumers, peak),
                    answer_facts(tensors, nodes, consumers, calls, described), tables, nnames, d, modules, spans(tables), rules)


def with_origins(nodes: pd.DataFrame, tables: dict) -> pd.DataFrame:
    """Each backward node's module and source line: those of the forward op that made it."""
    node_module, node_source = node_origins(tables)
    nodes["module"] = nodes["node"].map(node_module).fillna("")
    nodes["source"] = nodes["node"].map(node_source).fillna("")
    return nodes


__all__ = ["Analysis", "AnswerFacts", "AtPeak", "Consumer", "Peak", "Slots", "Summary", "analyze", "storage_names"]
