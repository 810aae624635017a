"""Backward nodes: gradmem ids for them, what each saved, and hooks that time them.

Node Python objects cannot be weak-referenced and must never be held (a node holds its
saved tensors), so a node is known by a key: its name and autograd sequence number, or,
for ``AccumulateGrad``, the storage of the leaf it accumulates into.

Which node and field own a saved slot is read from ``node._raw_saved_<field>.data``: that
returns the object our pack hook made without unpacking it. A slot whose unpack hook is
not ours (checkpoint, save_on_cpu, the user's own hooks) is reported as hidden.
"""
from __future__ import annotations

import itertools
from functools import partial
from typing import Iterable

import torch

from ..events import EventKind
from ..roles import Phase
from .cursor import Cursor
from .recorder import Recorder
from .saved import Packed
from .storages import Storages
from .native.loader import own_ops
from .values import _is_fake, exact_now, small_attr

ACCUMULATE = "torch::autograd::AccumulateGrad"
RAW = "_raw_saved_"
SAVED = "_saved_"


def grad_fn_of(t):
    """``t.grad_fn``, or None where torch refuses to say: a view made under no_grad whose
    base was then modified in place (``nn.Embedding``'s padding row) raises on reading it."""
    try:
        return t.grad_fn
    except RuntimeError:
        return None


def _wrapped_scalar(data) -> bool:
    """A 0-dim CPU double, long or complex tensor in a slot that no hook packed: how torch
    wraps a python number passed to an op (there is no public test for it)."""
    return (isinstance(data, torch.Tensor) and data.dim() == 0 and data.device.type in ("cpu", "meta")
            and data.dtype in (torch.float64, torch.int64, torch.complex128, torch.bool) and not data.requires_grad)


def short_name(name: str) -> str:
    return name.rsplit("::", 1)[-1]


class Graph:
    packed_types: tuple = (Packed,)   # what our pack hooks put in a slot (the native engine adds its own)

    def __init__(self, rec: Recorder, cursor: Cursor, storages: Storages):
        self.rec = rec
        self.cursor = cursor
        self.storages = storages
        self._ids: dict[tuple, int] = {}
        self._next = itertools.count(1)
        self._fields: dict[type, tuple[str, ...]] = {}
        self._names: dict[int, str] = {}

    def name_of(self, nid: int) -> str:
        return self._names.get(nid, "?")

    def current_node(self) -> int | None:
        """The id of the backward node the engine is running on this thread, if any."""
        node = torch._C._current_autograd_node()
        return self.node_id(node) if node is not None else None

    def key(self, node) -> tuple:
        name = node.name()
        if name == ACCUMULATE:
            return (name, self.storages.see(node.variable))
        return (name, node._sequence_nr())

    def node_id(self, node) -> int:
        nid = self._ids.get(self.key(node))
        if nid is None:
            self.discover([node])
            nid = self._ids[self.key(node)]
        return nid

    def node_of(self, t, grad_fn) -> int:
        """The id of ``t``'s ``grad_fn`` (the native engine discovers from the tensor)."""
        return self.node_id(grad_fn)

    def discover_from(self, tensors: Iterable) -> None:
        """Discover the graph behind these tensors' grad_fns."""
        self.discover([grad_fn_of(t) for t in tensors])

    def leaves_of(self, tensors: Iterable, call: str = "backward") -> list:
        """The leaves whose AccumulateGrad nodes the tensors' grad_fns reach (``call``, the
        backward call's kind, matters to the native engine's walk only)."""
        return [n.variable for n in self.reachable([grad_fn_of(t) for t in tensors]) if hasattr(n, "variable")]

    def discover(self, roots: Iterable) -> None:
        """Give ids to the nodes not seen yet, then record them and their saved slots."""
        new, stack = [], [r for r in roots if r is not None]
        while stack:
            node = stack.pop()
            key = self.key(node)
            if key in self._ids:
                continue
            self._ids[key] = nid = next(self._next)
            new.append((nid, node))
            stack.extend(n for n, _ in node.next_functions if n is not None)
        for nid, node in reversed(new):
            self._record(nid, node)

    def _record(self, nid: int, node) -> None:
        name = node.name()
        self._names[nid] = short_name(name)
        data = {"node": nid, "name": short_name(name), "next": tuple(
            (self._ids.get(self.key(n)) if n is not None else None, nr) for n, nr in node.next_functions
        )}
        if name == ACCUMULATE:
            data["leaf"] = self.storages.see(node.variable)
        attrs = self._attrs(node)
        if attrs:
            data["attrs"] = attrs
        self.rec.emit(EventKind.NODE, **data)
        for field in self._slot_fields(node):
            self._record_slots(nid, node, field)

    def _slot_fields(self, node) -> tuple[str, ...]:
        fields = self._fields.get(type(node))
        if fields is None:
            fields = tuple(a[len(RAW):] for a in dir(node) if a.startswith(RAW))
            self._fields[type(node)] = fields
        return fields

    def _attr_fields(self, node) -> tuple[str, ...]:
        """The saved values that are not tensors (``exponent``, ``self_sym_sizes``): reading
        them unpacks nothing, where reading a tensor field would run the unpack hook."""
        key = (type(node), "attrs")
        fields = self._fields.get(key)
        if fields is None:
            tensors = set(self._slot_fields(node))
            fields = tuple(a[len(SAVED):] for a in dir(node)
                           if a.startswith(SAVED) and a[len(SAVED):] not in tensors)
            self._fields[key] = fields
        return fields

    def _attrs(self, node) -> dict:
        out = {}
        for field in self._attr_fields(node):
            try:
                out[field] = small_attr(getattr(node, SAVED + field))
            except Exception:   # a value torch cannot give back as Python: left out
                continue
        return out

    def _record_slots(self, nid: int, node, field: str) -> None:
        try:
            raw = getattr(node, RAW + field)
        except RuntimeError:  # already released
            return
        items = raw if isinstance(raw, (list, tuple)) else [raw]
        for i, saved in enumerate(items):
            label = field if len(items) == 1 and not isinstance(raw, (list, tuple)) else f"{field}[{i}]"
            if saved is not None:
                self._record_slot(nid, label, saved)

    def _record_slot(self, nid: int, field: str, saved) -> None:
        try:
            data = saved.data
        except RuntimeError:
            return
        if isinstance(data, self.packed_types):
            self.rec.emit(EventKind.SLOT, pack=data.pid, node=nid, field=field)
            return
        hook = saved.unpack_hook
        if hook is None and _wrapped_scalar(data):
            self._name_scalar(data)
        storage = self.storages.see(data) if hook is None and hasattr(data, "untyped_storage") else None
        if hook is None and storage is None:   # an empty slot (that gradient is not needed)
            return
        hook_name = getattr(hook, "__qualname__", repr(hook)) if hook is not None else None
        value = exact_now(data) if hook is None else None   # a wrapped number (the 3 of x * 3)
        self.rec.emit(EventKind.HIDDEN_SLOT, node=nid, field=field, hook=hook_name, storage=storage, value=value)

    def _name_scalar(self, data) -> None:
        """A python number an op turned into a tensor (``0.5 * x``): autograd saves it with no
        hook at all. It is named for what it is, not left as a nameless input."""
        sid = self.storages.see(data)
        value = ""
        if not _is_fake(data):
            with torch._C._DisableTorchDispatch(), own_ops():   # through python dispatch it arrives as a float
                value = f" {data.item():g}"
        self.rec.emit(EventKind.NAME, storage=sid, name=f"python scalar{value}", source="wrapped_scalar",
                      shape=())

    def reachable(self, roots: Iterable) -> list:
        seen, out, stack = set(), [], [r for r in roots if r is not None]
        while stack:
            node = stack.pop()
            key = self.key(node)
            if key in seen:
                continue
            seen.add(key)
            out.append(node)
            stack.extend(n for n, _ in node.next_functions if n is not None)
        return out

    def hook_nodes(self, roots: Iterable) -> list:
        """Pre- and post-hooks on every node reachable from ``roots``; returns the handles."""
        handles = []
        for node in self.reachable(roots):
            nid = self.node_id(node)
            handles.append(node.register_prehook(partial(self.rec.guard.call, self._pre, nid, node.name())))
            handles.append(node.register_hook(partial(self.rec.guard.call, self._post, nid)))
        return handles

    def _pre(self, nid: int, name: str, grad_outputs) -> None:
        if self.cursor.node != nid:
            self.rec.begin_step(Phase.BACKWARD, short_name(name), node=nid)

    def _post(self, nid: int, grad_inputs, grad_outputs) -> None:
        see = self.storages.see
        self.rec.emit(
            EventKind.NODE_END, node=nid,
            grads_in=tuple(see(g) if g is not None else None for g in grad_outputs),
            grads_out=tuple(see(g) if g is not None else None for g in grad_inputs),
            values_in=tuple(exact_now(g) for g in grad_outputs),
            values_out=tuple(exact_now(g) for g in grad_inputs),
        )
