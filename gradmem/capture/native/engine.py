"""The native engine's seam with the capture: its recorder, its storage registry, and the
events it hands to the trace when the trace is built (the record stays in C++ until then).

In C++ (recorder.cpp): every op frame and every allocation and free, each allocation
attributed to its op and step as it happens; a step only becomes an event if something
refers to it. In Python: the saved-tensor hooks, the function watcher (backward calls,
retain_grad, which tensors require grad), one graph walk per backward and the leaf hooks,
exactly as on the Python engine. They ask the native side which step is running and which
storage id a tensor's storage has; nothing runs in Python per op.

Storages the allocator never reported during the capture (made before it, shared with
numpy or ``from_blob``, zero bytes) are tracked by the Python weakrefs of ``Storages``,
with ids from the same counter.
"""
from __future__ import annotations

import bisect
import time
from functools import partial

import torch

from ...events import EventKind as KIND
from ...gc_pause import paused
from ...roles import Phase
from ..cursor import Cursor
from ..graph import ACCUMULATE, Graph, short_name
from ..names import SKIP_DIRS
from ..recorder import Recorder
from ..resident import EVERY_S
from ..saved import CHECKPOINT_FILE, Packed, SavedTensorWatcher
from ..values import exact_now
from ..storages import Storages

STEP, NODE_END, SOURCE = KIND.STEP.value, KIND.NODE_END.value, KIND.SOURCE.value   # plain strs: events keep their kind as a str
CLOCK = {"method": "same clock", "offset_ns": 0, "error_ns": 0, "markers": 0}
_CPU = 0   # c10::DeviceType::CPU


class NativeSession:
    """The native engine's parts for one capture: cursor, recorder and storages that ask
    the extension, its start and stop, and the merge of its record into the events."""

    def __init__(self, ext, allocator_record: bool = True):
        self.ext = ext
        self.allocator_record = allocator_record   # the allocator's own record in the trace (--no-verify: not)
        self.graph: Graph | None = None
        self.cursor = NativeCursor(ext)
        self.rec = NativeRecorder(self.cursor)
        self.storages = NativeStorages(self.rec, ext, self)
        see = self.storages.see_guarded
        self.rec.module_spans = (ext.module_enter, partial(ext.module_exit, see))   # modules.py: (path), (path, output)
        self.leaf_names: dict = {}   # (leaf event, 0 arriving | 1 landed) -> storage id, named in Python
        # the recorder samples resident memory itself where /proc can be read, on a thread
        # that never takes the GIL: the Python sampler's thread then stays off
        self.samples_rss = ext.resident_bytes() >= 0
        self.sources = False   # read the user's line behind each op (the capture's attribution)
        self._raw = None

    def make_graph(self, rec, cursor, storages) -> Graph:
        self.graph = NativeGraph(rec, cursor, storages, self.ext)
        return self.graph

    def saved_watcher(self, rec, cursor, storages, graph) -> "NativeSavedWatcher":
        return NativeSavedWatcher(rec, cursor, storages, graph, self.ext)

    def __enter__(self) -> "NativeSession":
        # tensor facts of each top-level op's inputs too (want_inputs); RSS as resident.py samples it
        self.ext.start(1, True, round(EVERY_S * 1000) if self.samples_rss else 0,
                       list(SKIP_DIRS) if self.sources else [], self.storages.see_guarded)
        return self

    def __exit__(self, *exc) -> bool:
        self.stop()
        return False

    def stop(self) -> None:
        """Stop recording; the record stays in C++ (``ext.Record``) until the merge, so
        leaving the capture's block makes no Python object per event."""
        if self._raw is None and self.ext.running():
            self._raw = self.ext.stop()

    def merge(self) -> None:
        """Call after the recorder stopped: no Python event may come after the merge."""
        self.stop()
        if self._raw is not None:
            with paused():   # only gradmem's own tuples are made here: no cycles to collect
                merge(self.rec, self._raw.take(), self.leaf_names, self.allocator_record)
            self._raw = None


class NativeCursor(Cursor):
    """The step is the native recorder's (reading it marks it, so that it is exported);
    backward calls are told to it, so its steps know their phase. ``fresh_call`` stays
    False: the native side knows the op a saved input belongs to."""

    def __init__(self, ext):
        super().__init__()
        self.ext = ext

    @property
    def step(self) -> int:
        return self.ext.current_step()   # -1 once it stopped

    @step.setter
    def step(self, value) -> None:   # Cursor.__init__ sets it; the native side owns it
        pass

    @property
    def fresh_call(self) -> bool:
        return False

    @fresh_call.setter
    def fresh_call(self, value) -> None:
        pass

    def enter_backward(self, create_graph: bool) -> bool:
        outer = super().enter_backward(create_graph)
        self.ext.set_backward(self.backward_index, self.create_graph)
        return outer

    def leave_backward(self, outer_create_graph: bool) -> None:
        super().leave_backward(outer_create_graph)
        self.ext.set_backward(self.backward_index if self.in_backward else 0, self.create_graph)


class NativeRecorder(Recorder):
    """Steps Python begins (``(after backward)``) are begun in the native recorder, which
    exports them with the others; an event's step is the extension's (``NativeCursor``).

    No step begins in Python, so progress (``on_progress``) is told from the seams Python
    keeps: each backward call's start and end, and module calls, at most every 0.2 s."""

    module_spans = None
    engine = "native"
    TICK_S = 0.2
    _tick_at = 0.0   # monotonic time of the next progress report a module call may give

    merged = -1   # how many events the merge left, in sequence order (seq = place)

    def begin_step(self, phase, op: str, node: int | None = None) -> None:
        self.cursor.ext.begin_step(op, self.cursor.backward_index if phase == "backward" else 0)

    def _in_order(self) -> list:
        """The merged record is in sequence order already: no second sort, unless an event
        came after the merge."""
        return self.events if self.merged == len(self.events) else sorted(self.events)

    @property
    def spans(self):
        """The module spans the watcher calls (read once, when it is built)."""
        if self.on_progress is None:
            return self.module_spans
        enter, exit_ = self.module_spans
        tick = self.progress

        def enter_and_tick(path):
            enter(path)
            tick()
        return enter_and_tick, exit_

    def progress(self, phase=None, now: bool = False) -> None:
        """Tell ``on_progress`` how far the run is, if ``TICK_S`` passed since (or ``now``)."""
        t = time.monotonic()
        if self.on_progress is None or (t < self._tick_at and not now):
            return
        self._tick_at = t + self.TICK_S
        steps, events = self.cursor.ext.progress()
        if phase is None:
            phase = Phase.BACKWARD if self.cursor.in_backward else Phase.FORWARD
        self.on_progress(steps, phase, events + len(self.events))


class NativeGraph(Graph):
    """The walk is the extension's (recorder.cpp, "the backward graph"): it keeps the node
    ids and records each new node and each slot holding our pack, exported when the
    capture ends (``merge`` makes the events the Python walk emits). Python reads only the
    slots that are not ours. No node hooks: node steps and ends come from the recorder."""

    def __init__(self, rec, cursor, storages, ext):
        super().__init__(rec, cursor, storages)
        self.ext = ext
        self.packed_types = (Packed, ext.Packed)

    def hook_nodes(self, roots) -> list:
        return []

    def discover_from(self, tensors) -> None:
        for nid, field, slot in self.ext.discover(list(tensors), self.storages.see_guarded, self._describe):
            self._record_slot(nid, field, slot)   # not our pack: checkpoint's, save_on_cpu's, a wrapped number

    def discover(self, roots) -> None:
        """Node objects cannot be handed to the extension's walk: a node it has not walked
        yet is found from a tensor (``node_of``), never from the node alone."""

    def node_id(self, node) -> int | None:
        return self.ext.node_id(*self.key(node))

    def node_of(self, t, grad_fn) -> int | None:
        key = self.key(grad_fn)
        nid = self.ext.node_id(*key)
        if nid is None:
            self.discover_from([t])
            nid = self.ext.node_id(*key)
        return nid

    def leaves_of(self, tensors, call: str = "backward") -> list:
        """For a ``backward`` call the walk also watches each leaf's gradient (no Python per
        leaf: ``NativeGradWatcher``) and returns only the leaves whose facts are not recorded
        yet; for ``autograd.grad`` every leaf, for the Python hooks."""
        return self.ext.leaves(list(tensors), self.storages.see_guarded, call == "backward")

    def _describe(self, node) -> tuple:
        return self._slot_fields(node), self._attr_fields(node)


class NativeSavedWatcher(SavedTensorWatcher):
    """The pack and unpack hooks are the extension's own (recorder.cpp, "saved-tensor
    hooks"): they record what the Python pair records, with no Python run per saved tensor
    in the usual case. Python is called back for what it owns (the id of a storage made
    before the capture, a small tensor's exact digits), and this watcher's own pair takes
    over for a tensor the C++ pair cannot describe. Hooks installed before the capture
    (``save_on_cpu`` around it) keep the whole Python pair, which wraps them."""

    def __init__(self, rec, cursor, storages, graph, ext):
        super().__init__(rec, cursor, storages, graph)
        self.ext = ext
        self._next = _Counter(ext.new_pid)   # one pack id counter for both pairs

    def __enter__(self):
        if self._outer:
            return super().__enter__()
        self.ext.hook_saved(self.storages.see_guarded, partial(self.rec.guard.call, exact_now), self.pack,
                            self.unpack, CHECKPOINT_FILE, self.ext.pack_saved, self.ext.unpack_saved)
        self._cm = torch.autograd.graph.saved_tensors_hooks(self.ext.pack_saved, self.ext.unpack_saved)
        self._cm.__enter__()
        return self


class NativeStorages(Storages):
    """Storage ids: the native recorder's for allocations it saw, weakrefs for the rest."""

    def __init__(self, rec: NativeRecorder, ext, session: NativeSession):
        super().__init__(rec)
        self.ext = ext
        self.session = session
        self._next = _Counter(ext.new_id)
        # ``see`` for the extension to call back: a failure is gradmem's, recorded, never raised
        self.see_guarded = partial(rec.guard.call, self.see)

    def close(self) -> None:
        """Stop watching and stop the native recorder; its record joins the events when the
        trace is built (``settle``)."""
        super().close()
        self.session.stop()

    def settle(self) -> None:
        self.session.merge()

    def lookup(self, t):
        """A storage the capture knows or the extension saw allocated; one made before the
        capture that nothing recorded stays unknown, as on the Python engine (naming a
        variable must not add its storage to the trace)."""
        sid = self._native_id(t)
        return sid if sid is not None else super().lookup(t)

    def see(self, t, op: str = "", preexisting: bool = True, factory: bool = False,
            recompute: bool = False, grad_args: bool = False):
        sid = self._native_id(t)
        return sid if sid is not None else super().see(t, op, preexisting, factory, recompute, grad_args)

    def _native_id(self, t):
        try:
            s = t.untyped_storage()
        except (RuntimeError, NotImplementedError):
            return None
        sid = self._ids.get(id(s))
        if sid is not None:
            return sid
        try:
            ptr = s.data_ptr()
        except RuntimeError:   # a storage FSDP2 freed (resized to nothing): no memory of its own
            return None
        if ptr:
            sid = self.ext.known(ptr)   # one call, no facts built, for the usual claimed storage
            if sid > 0:
                return sid
            if sid < 0:
                sid = self.ext.claim(ptr, str(t.dtype).replace("torch.", ""), list(t.shape), t.requires_grad)
                if sid:
                    return sid
        return None


class _Counter:
    """``next()`` on it draws from one of the native recorder's counters (storage ids, shared
    with allocations; pack ids, shared with the C++ pack hook)."""

    def __init__(self, draw):
        self.draw = draw

    def __next__(self) -> int:
        return self.draw()


def merge(rec: NativeRecorder, raw: dict, leaf_names: dict, allocator_record: bool = True) -> None:
    """Put the native record into ``rec.events``: its steps, allocations, frees, node ends,
    saved slots, graph and the allocator's record, merged with Python's events by time (one
    clock), with native step serials turned into step numbers."""
    node_ids = {(name, part): nid for name, part, nid in raw.get("node_ids", ())}
    ops = raw["ops"]
    steps = {s[0]: s for s in raw["steps"]}
    number = {serial: i + 1 for i, serial in enumerate(sorted(steps))}
    node_of = _node_of_step(raw, ops, node_ids, rec, number)
    out = []
    add = out.append
    keys = rec._keys.setdefault

    def event(t, kind, serial, **data):
        k = tuple(data)
        add((t, len(out), kind, number.get(serial, 0), keys(k, k), tuple(data.values())))

    source_keys = keys(*(("file", "line", "function"),) * 2)
    for t, serial, place in raw.get("sources", ()):   # first: before the step it begins, as modules.py emits it
        add((t, len(out), SOURCE, number.get(serial, 0), source_keys, place))
    step_keys = keys(*(("phase", "op", "node", "backward"),) * 2)
    for serial, t, op, kind, _seq, backward, label in raw["steps"]:   # Phase values, as begin_step emits
        add((t, len(out), STEP, number.get(serial, 0), step_keys, ("backward" if backward else "forward",
             label if kind == 2 else ops[op][0], node_of.get(serial), backward if backward else None)))
    alloc_keys = keys(*(("storage", "nbytes", "device", "dtype", "shape", "op", "preexisting", "factory", "value",
                         "ptr"),) * 2)
    flagged = {(recompute, grad_args): keys(*(alloc_keys[:-1] + ("recompute",) * recompute + ("grad_args",) * grad_args
                                              + ("ptr",),) * 2)
               for recompute in (False, True) for grad_args in (False, True)}   # storages.py's order of the flags
    free_keys = keys(("storage",), ("storage",))
    step_of = number.get
    for (sid, t, serial, nbytes, ptr, dev, dev_index, dtype, shape, op, factory, grad_args, value,
         t_free, serial_free, recompute) in raw["allocs"]:
        common = (sid, nbytes, _device(dev, dev_index), dtype, tuple(shape), ops[op][0] if op >= 0 else "", False,
                  factory, value or None) + (True,) * recompute + (True,) * grad_args
        add((t, len(out), KIND.ALLOC.value, step_of(serial, 0), flagged[recompute, grad_args], common + (ptr,)))
        if t_free >= 0:
            add((t_free, len(out), KIND.FREE.value, step_of(serial_free, 0), free_keys, (sid,)))
    for t, serial, sid, seq, output_nr, node in raw["facts"]:   # what the Python engine's TensorFacts records
        if seq < 0:
            event(t, KIND.TENSOR.value, serial, storage=sid, requires_grad=True, leaf=True)
        else:
            event(t, KIND.TENSOR.value, serial, storage=sid, requires_grad=True, leaf=False, node=node_ids.get((node, seq)),
                  output_nr=output_nr)
    for i, (t, serial, target, has_in, grad_in, shape_in, has_grad, grad, shape, value) in enumerate(raw["leaf_events"]):
        if has_in:    # as the Python engine's leaf hooks record them (grads.py)
            event(t, KIND.GRAD.value, serial, target=target, grad=grad_in or leaf_names.get((i, 0)), shape=tuple(shape_in))
        if has_grad:
            event(t, KIND.LEAF_GRAD.value, serial, target=target, grad=grad or leaf_names.get((i, 1)), value=value or None,
                  shape=tuple(shape))
    _saved_events(raw, add, out, keys, step_of, node_of)
    end_keys = keys(*(("node", "grads_in", "grads_out", "values_in", "values_out"),) * 2)
    for t, serial, grads_in, grads_out, values_in, values_out in raw["node_ends"]:
        nid = node_of.get(serial)
        if nid is None:   # a node no walk met (a nested backward's, as a reentrant checkpoint runs):
            continue      # the Python engine hooks only the nodes it walked
        add((t, len(out), NODE_END, number.get(serial, 0), end_keys,
             (nid, _or_none(grads_in), _or_none(grads_out), _or_none(values_in), _or_none(values_out))))
    cpu = [e for e in raw["allocator"] if e[5] == _CPU] if allocator_record else []
    if cpu:
        event(cpu[0][0], KIND.CLOCK.value, cpu[0][1], **CLOCK)
    allocator_keys = keys(("ptr", "nbytes", "total"), ("ptr", "nbytes", "total"))
    for t, serial, ptr, nbytes, total, _dev in cpu:
        add((t, len(out), KIND.ALLOCATOR.value, step_of(serial, 0), allocator_keys, (ptr, nbytes, total)))
    _graph_events(raw, add, out, keys, step_of, _node_births(raw))
    enter, exit_ = keys(("module",), ("module",)), keys(("module", "outputs"), ("module", "outputs"))
    for t, serial, is_exit, path, outputs in raw.get("modules", ()):   # as modules.py emits them
        add((t, len(out), KIND.MODULE_EXIT.value if is_exit else KIND.MODULE_ENTER.value, step_of(serial, 0),
             exit_ if is_exit else enter, (path, outputs) if is_exit else (path,)))
    rss_keys = keys(("rss",), ("rss",))
    for t, serial, rss in raw.get("rss", ()):   # as resident.py samples it
        add((t, len(out), KIND.RSS.value, step_of(serial, 0), rss_keys, (rss,)))
    name_keys = keys(*(("storage", "name", "source", "shape"),) * 2)
    for t, serial, sid, name, shape in raw.get("grad_names", ()):   # as names.py names a .grad
        add((t, len(out), KIND.NAME.value, step_of(serial, 0), name_keys, (sid, f"{name}.grad", "grad", shape)))
    for seq, t, kind, serial, k, values in rec.events:   # Python's own, stamped with serials
        add((t, len(out), kind, number.get(serial, 0), k, values))
    out.sort()
    rec.events = [(i, t, kind, step, k, v) for i, (t, _, kind, step, k, v) in enumerate(out)]
    rec.merged = len(rec.events)   # already in sequence order (events_and_shapes)


SAVED_KEYS = ("pack", "storage", "shape", "stride", "dtype", "numel", "element_size", "value")


def _saved_events(raw: dict, add, out: list, keys, step_of, node_of: dict) -> None:
    """The C++ saved-tensor hooks' record as the Python pair emits it (saved.py)."""
    plain, kept = keys(SAVED_KEYS, SAVED_KEYS), keys(SAVED_KEYS + ("kept_for",), SAVED_KEYS + ("kept_for",))
    for t, serial, pid, sid, shape, stride, dtype, numel, size, value, checkpoint in raw["packs"]:
        values = (pid, sid or None, shape, stride, dtype, numel, size, value or None)
        add((t, len(out), KIND.SAVED.value, step_of(serial, 0), kept if checkpoint else plain,
             values + ("checkpoint",) if checkpoint else values))
    unpacked, released = keys(("pack", "node"), ("pack", "node")), keys(("pack",), ("pack",))
    for t, serial, pid, node_serial in raw["unpacks"]:
        add((t, len(out), KIND.UNPACKED.value, step_of(serial, 0), unpacked, (pid, node_of.get(node_serial))))
    for t, serial, pid in raw["releases"]:
        add((t, len(out), KIND.RELEASED.value, step_of(serial, 0), released, (pid,)))


def _graph_events(raw: dict, add, out: list, keys, step_of, born: dict) -> None:
    """The walk's record as graph.py emits it: a NODE event per node, placed where its op
    made it (``born``), and a SLOT event per slot holding our pack."""
    node_keys = {(leaf, attrs): keys(*(("node", "name", "next") + ("leaf",) * leaf + ("attrs",) * attrs,) * 2)
                 for leaf in (False, True) for attrs in (False, True)}
    short: dict[str, str] = {}
    for t, serial, nid, name, part, next_, attrs in raw.get("nodes", ()):
        t, serial = born.get(nid, (t, serial))
        leaf = name == ACCUMULATE
        brief = short.get(name) or short.setdefault(name, short_name(name))
        values = (nid, brief, next_) + (part,) * leaf
        if attrs:   # a dict with lists, as values.small_attr makes them (tuples until now)
            values += ({field: list(v) if type(v) is tuple else v for field, v in attrs},)
        add((t, len(out), KIND.NODE.value, step_of(serial, 0), node_keys[leaf, bool(attrs)], values))
    slot_keys = keys(("pack", "node", "field"), ("pack", "node", "field"))
    for t, serial, pack, nid, field in raw.get("slots", ()):
        add((t, len(out), KIND.SLOT.value, step_of(serial, 0), slot_keys, (pack, nid, field)))


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
    if dev == _CPU:
        return "cpu"
    name = {1: "cuda"}.get(dev, f"device{dev}")
    return f"{name}:{index}" if index >= 0 else name
