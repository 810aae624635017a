"""The native record turned into the trace's columns when the trace is built.

The record (``ext.Record.take()``) holds its steps, allocations, frees, node ends, saved
slots, graph walks and the allocator's own record as plain tuples; Python's hooks kept
their own events (``Recorder.events``). Both become events exactly as the Python engine
emits them, merged by time (one clock), with the extension's step serials turned into
step numbers, and grouped by kind and field names as columns (``Trace.shapes``).

Each event is one row tuple ``(t, n, step, *values)`` in its group; ``n`` is the order the
rows were added in, which breaks ties in time as one sort of every event would. The order
itself is computed with numpy over all the groups at once: on a 30-step MLP (200,000
events) sorting event tuples and regrouping them took 0.5 s.
"""
from __future__ import annotations

import bisect
import itertools
import operator

import numpy as np

from ...events import EventKind as KIND
from ..graph import ACCUMULATE, short_name

STEP, NODE_END, SOURCE = KIND.STEP.value, KIND.NODE_END.value, KIND.SOURCE.value   # plain strs, as events keep them
ALLOC, FREE, TENSOR, GRAD, LEAF_GRAD = (k.value for k in (KIND.ALLOC, KIND.FREE, KIND.TENSOR, KIND.GRAD,
                                                          KIND.LEAF_GRAD))
SAVED, UNPACKED, RELEASED, NODE, SLOT = (k.value for k in (KIND.SAVED, KIND.UNPACKED, KIND.RELEASED, KIND.NODE,
                                                           KIND.SLOT))
ALLOCATOR, CLOCK_KIND, RSS, NAME = (k.value for k in (KIND.ALLOCATOR, KIND.CLOCK, KIND.RSS, KIND.NAME))
MODULE_ENTER, MODULE_EXIT = KIND.MODULE_ENTER.value, KIND.MODULE_EXIT.value
CLOCK = {"method": "same clock", "offset_ns": 0, "error_ns": 0, "markers": 0}
CPU = 0   # c10::DeviceType::CPU
ALLOC_KEYS = ("storage", "nbytes", "device", "dtype", "shape", "op", "preexisting", "factory", "value")
SAVED_KEYS = ("pack", "storage", "shape", "stride", "dtype", "numel", "element_size", "value")


class Shapes:
    """Rows grouped by (kind, field names) as the merge adds them; ``columns()`` gives the
    trace's columns, each group's rows in time order, ``seq`` their place in all."""

    def __init__(self):
        self.rows: dict[tuple, list] = {}
        self.n = itertools.count().__next__   # the order rows are added in

    def adder(self, kind: str, keys: tuple):
        """The append of the rows of one kind with these fields."""
        return self.rows.setdefault((kind, keys), []).append

    def columns(self) -> dict:
        groups = [(shape, list(zip(*rows))) for shape, rows in self.rows.items() if rows]
        if not groups:
            return {}
        total = sum(len(columns[0]) for _, columns in groups)
        t = np.fromiter(itertools.chain.from_iterable(c[0] for _, c in groups), dtype=np.int64, count=total)
        n = np.fromiter(itertools.chain.from_iterable(c[1] for _, c in groups), dtype=np.int64, count=total)
        rank = np.empty(len(t), dtype=np.int64)
        rank[np.lexsort((n, t))] = np.arange(len(t))
        out, at = {}, 0
        for shape, (times, _n, *columns) in groups:
            seq = rank[at:at + len(times)]
            at += len(times)
            columns = [times, *columns]
            if len(seq) > 1 and (seq[1:] < seq[:-1]).any():   # not in time order as added: put it so
                order = np.argsort(seq, kind="stable")
                pick = operator.itemgetter(*order.tolist())
                columns, seq = [pick(c) for c in columns], seq[order]
            seq = seq.tolist()
            out[shape] = [seq, seq, *columns]   # (indexes, seq, t_ns, step, *values): the trace's order is seq
        return out


def merge(rec, raw: dict, leaf_names: dict, allocator_record: bool = True) -> dict:
    """The trace's columns (``Trace.shapes``) of the native record ``raw`` and the events
    Python recorded (``rec.events``), as the Python engine emits them."""
    node_ids = {(name, part): nid for name, part, nid in raw.get("node_ids", ())}
    ops = raw["ops"]
    number = {serial: i + 1 for i, serial in enumerate(sorted(s[0] for s in raw["steps"]))}
    node_of = _node_of_step(raw, ops, node_ids, rec, number)
    shapes = Shapes()
    step_of = number.get
    _steps(raw, shapes, step_of, ops, node_of)
    _allocations(raw, shapes, step_of, ops)
    _tensor_events(raw, shapes, step_of, node_ids, leaf_names)
    _saved_events(raw, shapes, step_of, node_of)
    _node_ends(raw, shapes, step_of, node_of)
    _allocator(raw, shapes, step_of, allocator_record)
    _graph_events(raw, shapes, step_of, _node_births(raw))
    _process_events(raw, shapes, step_of)
    n = shapes.n
    for _seq, t, kind, serial, keys, values in rec.events:   # Python's own, stamped with serials
        shapes.adder(kind, keys)((t, n(), step_of(serial, 0), *values))
    return shapes.columns()


def _steps(raw: dict, shapes: Shapes, step_of, ops: list, node_of: dict) -> None:
    """Sources first (each before the step it begins, as modules.py emits it), then steps
    (Phase values, as begin_step emits them)."""
    n, source = shapes.n, shapes.adder(SOURCE, ("file", "line", "function"))
    for t, serial, place in raw.get("sources", ()):
        source((t, n(), step_of(serial, 0), *place))
    step = shapes.adder(STEP, ("phase", "op", "node", "backward"))
    for serial, t, op, kind, _seq, backward, label in raw["steps"]:
        step((t, n(), step_of(serial, 0), "backward" if backward else "forward", label if kind == 2 else ops[op][0],
              node_of.get(serial), backward if backward else None))


def _allocations(raw: dict, shapes: Shapes, step_of, ops: list) -> None:
    """Each allocation as storages.py records it (its flags in storages.py's order), and its free."""
    n, free = shapes.n, shapes.adder(FREE, ("storage",))
    flagged = {(recompute, grad_args): shapes.adder(ALLOC, ALLOC_KEYS + ("recompute",) * recompute
                                                    + ("grad_args",) * grad_args + ("ptr",))
               for recompute in (False, True) for grad_args in (False, True)}
    for (sid, t, serial, nbytes, ptr, dev, dev_index, dtype, shape, op, factory, grad_args, value,
         t_free, serial_free, recompute) in raw["allocs"]:
        flagged[recompute, grad_args]((t, n(), step_of(serial, 0), sid, nbytes, _device(dev, dev_index), dtype,
                                       tuple(shape), ops[op][0] if op >= 0 else "", False, factory, value or None)
                                      + (True,) * recompute + (True,) * grad_args + (ptr,))
        if t_free >= 0:
            free((t_free, n(), step_of(serial_free, 0), sid))


def _tensor_events(raw: dict, shapes: Shapes, step_of, node_ids: dict, leaf_names: dict) -> None:
    """What the Python engine's TensorFacts records, then its leaf hooks (grads.py)."""
    n = shapes.n
    leaf = shapes.adder(TENSOR, ("storage", "requires_grad", "leaf"))
    made = shapes.adder(TENSOR, ("storage", "requires_grad", "leaf", "node", "output_nr"))
    for t, serial, sid, seq, output_nr, node in raw["facts"]:
        if seq < 0:
            leaf((t, n(), step_of(serial, 0), sid, True, True))
        else:
            made((t, n(), step_of(serial, 0), sid, True, False, node_ids.get((node, seq)), output_nr))
    arriving = shapes.adder(GRAD, ("target", "grad", "shape"))
    landed = shapes.adder(LEAF_GRAD, ("target", "grad", "value", "shape"))
    for i, (t, serial, target, has_in, grad_in, shape_in, has_grad, grad, shape, value) in enumerate(raw["leaf_events"]):
        if has_in:
            arriving((t, n(), step_of(serial, 0), target, grad_in or leaf_names.get((i, 0)), tuple(shape_in)))
        if has_grad:
            landed((t, n(), step_of(serial, 0), target, grad or leaf_names.get((i, 1)), value or None, tuple(shape)))


def _saved_events(raw: dict, shapes: Shapes, step_of, node_of: dict) -> None:
    """The C++ saved-tensor hooks' record as the Python pair emits it (saved.py)."""
    n = shapes.n
    plain, kept = shapes.adder(SAVED, SAVED_KEYS), shapes.adder(SAVED, SAVED_KEYS + ("kept_for",))
    for t, serial, pid, sid, shape, stride, dtype, numel, size, value, checkpoint in raw["packs"]:
        row = (t, n(), step_of(serial, 0), pid, sid or None, shape, stride, dtype, numel, size, value or None)
        if checkpoint:
            kept(row + ("checkpoint",))
        else:
            plain(row)
    unpacked, released = shapes.adder(UNPACKED, ("pack", "node")), shapes.adder(RELEASED, ("pack",))
    for t, serial, pid, node_serial in raw["unpacks"]:
        unpacked((t, n(), step_of(serial, 0), pid, node_of.get(node_serial)))
    for t, serial, pid in raw["releases"]:
        released((t, n(), step_of(serial, 0), pid))


def _node_ends(raw: dict, shapes: Shapes, step_of, node_of: dict) -> None:
    n, end = shapes.n, shapes.adder(NODE_END, ("node", "grads_in", "grads_out", "values_in", "values_out"))
    for t, serial, grads_in, grads_out, values_in, values_out in raw["node_ends"]:
        nid = node_of.get(serial)
        if nid is None:   # a node no walk met (a nested backward's, as a reentrant checkpoint runs):
            continue      # the Python engine hooks only the nodes it walked
        end((t, n(), step_of(serial, 0), nid, _or_none(grads_in), _or_none(grads_out), _or_none(values_in),
             _or_none(values_out)))


def _allocator(raw: dict, shapes: Shapes, step_of, allocator_record: bool) -> None:
    """The CPU allocator's own record (``--no-verify``: none), on the hooks' clock."""
    cpu = [e for e in raw["allocator"] if e[5] == CPU] if allocator_record else []
    n = shapes.n
    if cpu:
        shapes.adder(CLOCK_KIND, tuple(CLOCK))((cpu[0][0], n(), step_of(cpu[0][1], 0), *CLOCK.values()))
    allocator = shapes.adder(ALLOCATOR, ("ptr", "nbytes", "total"))
    for t, serial, ptr, nbytes, total, _dev in cpu:
        allocator((t, n(), step_of(serial, 0), ptr, nbytes, total))


def _graph_events(raw: dict, shapes: Shapes, step_of, born: dict) -> None:
    """The walk's record as graph.py emits it: a NODE event per node, placed where its op
    made it (``born``), and a SLOT event per slot holding our pack."""
    n = shapes.n
    node = {(leaf, attrs): shapes.adder(NODE, ("node", "name", "next") + ("leaf",) * leaf + ("attrs",) * attrs)
            for leaf in (False, True) for attrs in (False, True)}
    short: dict[str, str] = {}
    for t, serial, nid, name, part, next_, attrs in raw.get("nodes", ()):
        t, serial = born.get(nid, (t, serial))
        leaf = name == ACCUMULATE
        brief = short.get(name) or short.setdefault(name, short_name(name))
        row = (t, n(), step_of(serial, 0), nid, brief, next_) + (part,) * leaf
        if attrs:   # a dict with lists, as values.small_attr makes them (tuples until now)
            row += ({field: list(v) if type(v) is tuple else v for field, v in attrs},)
        node[leaf, bool(attrs)](row)
    slot = shapes.adder(SLOT, ("pack", "node", "field"))
    for t, serial, pack, nid, field in raw.get("slots", ()):
        slot((t, n(), step_of(serial, 0), pack, nid, field))


def _process_events(raw: dict, shapes: Shapes, step_of) -> None:
    """Module spans (as modules.py emits them), resident memory (as resident.py samples
    it) and the .grads named in C++ (as names.py names them)."""
    n = shapes.n
    enter, exit_ = shapes.adder(MODULE_ENTER, ("module",)), shapes.adder(MODULE_EXIT, ("module", "outputs"))
    for t, serial, is_exit, path, outputs in raw.get("modules", ()):
        if is_exit:
            exit_((t, n(), step_of(serial, 0), path, outputs))
        else:
            enter((t, n(), step_of(serial, 0), path))
    rss = shapes.adder(RSS, ("rss",))
    for t, serial, value in raw.get("rss", ()):
        rss((t, n(), step_of(serial, 0), value))
    name = shapes.adder(NAME, ("storage", "name", "source", "shape"))
    for t, serial, sid, grad_of, shape in raw.get("grad_names", ()):
        name((t, n(), step_of(serial, 0), sid, f"{grad_of}.grad", "grad", shape))


def _node_births(raw: dict) -> dict:
    """{node id: (time, step serial)} of the top-level op that made each node, so a node
    discovered at a backward call sits where the Python engine records it: when its op
    returned, inside its module's span (module attribution of backward storages reads it).
    An op made the nodes whose sequence numbers it spanned; a node without one
    (AccumulateGrad) was made with the first node that consumes it."""
    ranges = sorted(raw["op_nodes"], key=lambda o: o[2])   # (t, serial, lo, hi)
    starts = [o[2] for o in ranges]
    born, consumers = {}, {}
    for _t, _serial, nid, name, number, next_, _attrs in raw.get("nodes", ()):   # number: its sequence number
        for child, _nr in next_:
            if child is not None:
                consumers.setdefault(child, []).append(nid)
        if name != ACCUMULATE and isinstance(number, int):
            i = bisect.bisect_right(starts, number) - 1
            if i >= 0 and number < ranges[i][3]:
                born[nid] = (ranges[i][0], ranges[i][1])
    pending = [n for n in consumers if n not in born]
    while pending:
        still = []
        for nid in pending:
            times = [born[c] for c in consumers[nid] if c in born]
            if times:
                born[nid] = min(times)
            else:
                still.append(nid)
        if len(still) == len(pending):
            break
        pending = still
    return born


def _node_of_step(raw: dict, ops: list, node_ids: dict, rec, number: dict) -> dict:
    """gradmem's node id for each backward-node step: by (name, sequence number), or for
    AccumulateGrad by the leaf whose .grad landed in that step."""
    out = {}
    for serial, _t, op, kind, seq, _b, _label in raw["steps"]:
        if kind == 1:
            nid = node_ids.get((ops[op][1], seq))
            if nid is not None:
                out[serial] = nid
    leaf_of = {}
    for _t, serial, target, *_ in raw["leaf_events"]:
        leaf_of.setdefault(serial, target)
    for _seq, _t, kind, serial, k, values in rec.events:
        if kind in (KIND.LEAF_GRAD, KIND.GRAD):
            leaf_of.setdefault(serial, dict(zip(k, values))["target"])
    for serial, _t, op, kind, _seq, _b, _label in raw["steps"]:
        if kind == 1 and ops[op][1] == ACCUMULATE and serial in leaf_of:
            nid = node_ids.get((ACCUMULATE, leaf_of[serial]))
            if nid is not None:
                out[serial] = nid
    return out


def _or_none(values) -> tuple:
    """The extension's 0 (no storage) and "" (no value) as None, as the Python engine records them."""
    return tuple([v or None for v in values])


def _device(dev: int, index: int) -> str:
    if dev == CPU:
        return "cpu"
    name = {1: "cuda"}.get(dev, f"device{dev}")
    return f"{name}:{index}" if index >= 0 else name
