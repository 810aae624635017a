"""The facts behind the plain-language answer and the "at the peak" table of report.html.

Render turns these into sentences and caps how many it shows; which storages belong in each
sentence (saved, freed promptly, kept only by the program, alive at the peak and why) is
decided here, once, from the analysis tables.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from .tables import each_row, known, pairs

from .consumers import Consumer
from .slots import Slots
from .storages import CALL_RETURNED
from .summary import Peak
from .timeline import live_at
from .training_steps import Described, most_at_once

# name sources that mean "the program (or a module) still holds this storage"
HOLDER_SOURCES = ("variable", "parameter", "buffer")
UNKNOWN_OWNER = "(unknown node)"       # a slot open at the peak whose node is unknown


@dataclass(frozen=True)
class AtPeak:
    """What was alive at the peak's event, and the facts that say why."""
    live: pd.DataFrame                   # tensors rows alive then, largest first; + grad_of_name
    before_bytes: int                    # live bytes when the peak's step began
    made: pd.DataFrame                   # alive then and allocated in the peak's step, allocation order
    open_slots: dict                     # {storage: ["Node.field", ...]} slots still held then
    holders: dict                        # {storage: (source, name)}: the program's first name for it
    consumers: dict                      # {gradient storage: Consumer}
    gradients: dict                      # {gradient storage: GradientAtPeak}: where it stood then


@dataclass(frozen=True)
class GradientAtPeak:
    """Where a gradient stood at the peak, so "why alive" is true at that moment."""
    state: str          # waiting (its node runs later) | running (its node runs now) |
                        # held_by_call (used; the backward()/grad() call holds it until it returns) | used
    consumer: Consumer
    call: str = ""      # backward | grad, for held_by_call
    free_step: int | None = None


def gradients_at(live: pd.DataFrame, consumers: dict, peak: Peak) -> dict[int, GradientAtPeak]:
    out = {}
    for sid, fa, fs in each_row(live, "id", "freed_after", "free_step"):
        c = consumers.get(int(sid))
        if c is None:
            continue
        free_step = int(fs) if known(fs) else None
        if c.end_seq > peak.seq:
            out[int(sid)] = GradientAtPeak("running" if c.step == peak.step else "waiting", c)
        elif str(fa).endswith(CALL_RETURNED):
            out[int(sid)] = GradientAtPeak("held_by_call", c, str(fa)[1:].split("()")[0], free_step)
        else:
            out[int(sid)] = GradientAtPeak("used", c, free_step=free_step)
    return out


@dataclass(frozen=True)
class AnswerFacts:
    """The storages each part of the answer speaks of, in reading order. With several
    backward calls, those of one training step (``described``: the peak's) only."""
    described: Described                 # the training step spoken of, of how many
    saved: pd.DataFrame                  # saved for backward, allocation order
    new_saved_bytes: int                 # of those, the activations' bytes (new memory)
    new_saved_at_once: int               # the most of those bytes alive at one moment
    new_saved_by_call: dict              # {training step: new bytes saved in its forward}
    remade: pd.DataFrame                 # activations checkpoint's recompute made in backward, allocation order
    remade_at_once: int                  # the most of their bytes alive at one moment
    intermediates: pd.DataFrame          # made in forward and never saved, allocation order
    intermediates_at_once: int           # the most of their bytes alive at one moment
    nodes: pd.DataFrame                  # the backward nodes that ran, execution order
    gradients: pd.DataFrame              # handed between nodes, + freed_promptly (bool)
    freed_at: dict                       # {step: [(name, role)] a node's run freed in it, in free order}
    freed_by_call: pd.DataFrame          # freed when backward()/grad() returned (grad(loss)), free order
    held: pd.DataFrame                   # slot released, yet kept alive by the program
    retained: pd.DataFrame               # retain_grad() copies, allocation order
    retained_at_once: int                # the most of their bytes alive at one moment
    param_grads: pd.DataFrame            # leaves' .grad, allocation order


def holders(name_events: pd.DataFrame) -> dict[int, tuple[str, str]]:
    """{storage: (source, name)} for storages the program's own names pointed at."""
    names = name_events[name_events["source"].isin(list(HOLDER_SOURCES))].drop_duplicates("storage")
    return {int(s): (src, n) for s, n, src in each_row(names, "storage", "name", "source")}


def at_peak(tensors: pd.DataFrame, steps: pd.DataFrame, tables: dict, slots: Slots, consumers: dict,
            peak: Peak) -> AtPeak:
    live = live_at(tensors, peak.seq)
    by_step = steps.set_index("step")["live_bytes"]
    names = pairs(tensors["id"], tensors["name"])
    ordered = live.sort_values(["nbytes", "alloc_seq"], ascending=[False, True])
    grad_of = ordered["grad_of"].tolist()
    ordered = ordered.assign(grad_of_name=[names.get(int(g), "?") if known(g) else "?" for g in grad_of])
    return AtPeak(
        live=ordered,
        before_bytes=int(by_step.shift(1).fillna(0).get(peak.step, 0)),
        made=live[live["alloc_step"] == peak.step].sort_values("alloc_seq"),
        open_slots=slots.open_at(peak.seq, UNKNOWN_OWNER),
        holders=holders(tables["name"]),
        consumers=consumers,
        gradients=gradients_at(ordered[ordered["role"] == "gradient"], consumers, peak),
    )


def _freed_promptly(grads: pd.DataFrame, consumers: dict[int, Consumer]) -> list[bool]:
    """Freed in the very step of the node that consumed it."""
    return [bool(known(f) and i in consumers and consumers[i].step == f)
            for i, f in each_row(grads, "id", "free_step")]


def _by_call(tensors: pd.DataFrame) -> pd.Series:
    return tensors["freed_after"].astype(str).str.endswith(CALL_RETURNED)


def _freed_at(tensors: pd.DataFrame, node_steps) -> dict[int, list[tuple[str, str]]]:
    """{node step: [(name, role), ...] freed in it, in free order}. Not what the call let
    go on returning: that was no node's doing. Built in one pass over plain arrays: a
    DataFrame per step costs seconds on a trace of a million events."""
    freed = tensors[tensors["free_step"].isin(list(node_steps)) & ~_by_call(tensors)].sort_values("free_seq")
    out: dict[int, list[tuple[str, str]]] = {}
    for step, name, role in zip(freed["free_step"].astype("int64").tolist(), freed["name"].tolist(),
                                freed["role"].tolist()):
        out.setdefault(step, []).append((name, role))
    return out


def _held(t: pd.DataFrame) -> pd.DataFrame:
    """Saved storages backward was done with (slot released) that lived on after it: only
    the program's reference kept them. Inputs and parameters are the program's anyway."""
    done = t[(t["saved_by"] != "") & t["released_step"].notna() & ~t["role"].isin(["input", "parameter"])]
    return done[done["free_step"].isna() | (done["free_step"] > done["released_step"])]


def of_the_step(t: pd.DataFrame, calls: pd.Series, described: Described) -> pd.DataFrame:
    """The storages of the training step spoken of; parameters belong to every step."""
    if not described.several:
        return t
    return t[(calls.reindex(t.index) == described.call) | (t["role"] == "parameter")]


def answer_facts(tensors: pd.DataFrame, nodes: pd.DataFrame, consumers: dict, calls: pd.Series,
                 described: Described) -> AnswerFacts:
    all_saved = tensors[(tensors["saved_by"] != "") & (tensors["role"] == "activation")]
    by_call = all_saved.groupby(calls.reindex(all_saved.index))["nbytes"].sum()
    t = of_the_step(tensors, calls, described)
    if described.several:
        nodes = nodes[nodes["backward"] == described.call]
    saved = t[t["saved_by"] != ""].sort_values("alloc_seq")
    new = saved[saved["role"] == "activation"]
    grads = t[t["role"] == "gradient"]
    inter = t[t["role"] == "intermediate"].sort_values("alloc_seq")
    retained = t[t["role"] == "retained_grad"].sort_values("alloc_seq")
    remade = t[t["recomputed"].astype(bool) & (t["role"] == "activation")].sort_values("alloc_seq")
    return AnswerFacts(
        described=described,
        saved=saved,
        new_saved_bytes=int(new["nbytes"].sum()),
        new_saved_at_once=most_at_once(new),
        new_saved_by_call={int(k): int(v) for k, v in by_call.items()},
        remade=remade,
        remade_at_once=most_at_once(remade),
        intermediates=inter,
        intermediates_at_once=most_at_once(inter),
        nodes=nodes,
        gradients=grads.assign(freed_promptly=_freed_promptly(grads, consumers)),
        freed_at=_freed_at(t, nodes["step"]),
        freed_by_call=t[_by_call(t)].sort_values("free_seq"),
        held=_held(t),
        retained=retained,
        retained_at_once=most_at_once(retained),
        param_grads=t[t["role"] == "param_grad"].sort_values("alloc_seq"),
    )
