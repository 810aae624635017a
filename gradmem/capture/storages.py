"""Storage registry: gradmem's own ids for storages, and the moment each one is freed.

Memory is a storage, not a tensor: views share their base's storage. A weakref on the
``UntypedStorage`` Python object fires exactly when the storage dies (PyTorch preserves
the Python object while the C++ storage lives), so ``id(storage)`` is stable for the
storage's life and we drop it from the table in the same callback. Addresses and ``id()``
are reused right after a free, so everything downstream uses our monotonic ids.
"""
from __future__ import annotations

import itertools
import weakref

import torch

from ..events import EventKind
from .ranks import inner_tensors
from .recorder import Recorder
from .names import user_line
from .values import UNINITIALIZED, _is_fake, preview, preview_now

ALLOC, FREE = EventKind.ALLOC.value, EventKind.FREE.value   # plain strs: the hot path
WRAPPED = EventKind.WRAPPED.value
PLAIN = frozenset({torch.Tensor, torch.nn.Parameter})   # no wrapper to look into: the hot path
LIFT_OPS = frozenset({"lift_fresh", "lift_fresh_copy", "lift"})   # torch.tensor(data) in the program


class Storages:
    def __init__(self, rec: Recorder):
        self.rec = rec
        self._ids: dict[int, int] = {}                 # id(storage object) -> gradmem id
        self._refs: dict[int, weakref.ref] = {}        # gradmem id -> weakref with callback
        self._next = itertools.count(1)
        self._wrapped: set[tuple] = set()              # (id(wrapper), inner ids) already reported
        self._lineage: dict[int, int] = {}             # resized generation -> first generation's id
        self._orphans: dict[int, tuple] = {}           # id(storage) resized to 0 -> (lineage, weakref)
        self._by_ptr: dict[int, int] = {}              # data address -> gradmem id of a live storage there

    def lookup(self, t: torch.Tensor) -> int | None:
        inner = inner_tensors(t) if type(t) not in PLAIN else None
        if inner is not None:   # DTensor: its local shard is the memory
            return self.lookup(inner[0]) if inner else None
        try:
            return self._ids.get(id(t.untyped_storage()))
        except (RuntimeError, NotImplementedError):    # sparse and other storage-less tensors
            return None

    def lookup_all(self, tensors: list) -> list:
        return [self.lookup(t) for t in tensors]

    def see(self, t: torch.Tensor, op: str = "", preexisting: bool = True, factory: bool = False,
            recompute: bool = False, grad_args: bool = False) -> int | None:
        """The id of ``t``'s storage, tracking it first if it is new. A wrapper subclass
        (DTensor) is looked through: the storages are its inner tensors'."""
        if type(t) not in PLAIN:   # DTensor and other wrappers: the memory is inside them
            inner = inner_tensors(t)
            if inner is not None:
                return self._see_wrapped(t, inner, op, preexisting, factory, recompute, grad_args)
        try:
            s = t.untyped_storage()
        except (RuntimeError, NotImplementedError):
            return None
        sid = self._ids.get(id(s))
        if sid is None:
            if id(s) in self._orphans:   # resized to 0 (FSDP2 resharded it): no memory until it grows
                return None
            if preexisting:
                alias = self._alias(s, t)
                if alias is not None:
                    return alias
            flags = {k: True for k, v in (("recompute", recompute), ("grad_args", grad_args)) if v}
            if op in LIFT_OPS:
                flags["line"] = user_line()
            sid = self._track(s, t, op, preexisting, factory, flags)
        return sid

    def _alias(self, s, t) -> int | None:
        """A storage first met as an op's input whose memory is a tracked storage's: C++ code
        (gloo's reduce-scatter) can wrap the same memory in a second storage object. It
        owns no bytes; counting it as alive since before the capture would count them twice."""
        ptr = _ptr(s, t)
        sid = self._by_ptr.get(ptr) if ptr else None
        return sid if sid is not None and sid in self._refs else None

    def _see_wrapped(self, t, inner, op, preexisting, factory, recompute, grad_args) -> int | None:
        sids = [self.see(x, op, preexisting, factory, recompute, grad_args) for x in inner]
        key = (id(t), tuple(sids))
        if key not in self._wrapped:
            self._wrapped.add(key)
            for sid in sids:
                if sid is not None:
                    self.rec.emit(WRAPPED, storage=sid, wrapper=type(t).__name__,
                                  requires_grad=bool(t.requires_grad), leaf=bool(t.is_leaf))
        return sids[0] if sids else None

    def resized(self, s) -> None:
        """``s`` was resized in place (FSDP2): its old bytes are freed; bytes it has now
        are a new generation with a new id (see ``ranks.py``)."""
        key = id(s)
        old = self._ids.pop(key, None)
        if old is not None:
            self._refs.pop(old, None)    # the old weakref goes, and its callback with it
            self.rec.emit(FREE, storage=old, resized=True)
        lineage = self._lineage.pop(old, old)
        if s.nbytes() == 0:   # remembered while the storage object lives, for its next growth
            self._orphans[key] = (lineage, weakref.ref(s, lambda _ref, key=key: self._orphans.pop(key, None)))
            return
        lineage = self._orphans.pop(key, (lineage, None))[0]
        sid = next(self._next)
        self._ids[key] = sid
        self._lineage[sid] = lineage if lineage is not None else sid
        self._refs[sid] = weakref.ref(s, lambda _ref, key=key, sid=sid: self._freed(key, sid))
        ptr = _storage_ptr(s)
        if ptr:
            self._by_ptr[ptr] = sid
        self.rec.emit(ALLOC, storage=sid, nbytes=s.nbytes(), device=str(s.device), dtype="uint8",
                      shape=(s.nbytes(),), op="resize_", preexisting=False, factory=False, value=None,
                      lineage=self._lineage[sid], ptr=ptr)

    def _track(self, s, t: torch.Tensor, op: str, preexisting: bool, factory: bool, flags: dict) -> int:
        sid = next(self._next)
        key = id(s)
        self._ids[key] = sid
        self._refs[sid] = weakref.ref(s, lambda _ref, key=key, sid=sid: self._freed(key, sid))
        ptr = _ptr(s, t)
        if ptr and not preexisting:
            self._by_ptr[ptr] = sid
        self.rec.emit(
            ALLOC, storage=sid, nbytes=s.nbytes(), device=str(t.device),
            dtype=str(t.dtype).replace("torch.", ""), shape=tuple(t.shape), op=op,
            preexisting=preexisting, factory=factory, value=_value(t, op, preexisting),
            **flags,
            ptr=ptr,
        )
        return sid

    def _freed(self, key: int, sid: int) -> None:
        if self._ids.get(key) == sid:
            del self._ids[key]
        self._refs.pop(sid, None)
        self.rec.emit(FREE, storage=sid)

    def settle(self) -> None:
        """Hand the recorder the events kept elsewhere until the trace is built (the native
        engine's record); nothing here."""

    def close(self) -> None:
        """Stop watching: dropping the weakrefs means their callbacks never run."""
        self._refs.clear()
        self._ids.clear()
        self._by_ptr.clear()
        self._orphans.clear()


def _storage_ptr(s) -> int | None:
    try:
        return s.data_ptr() or None
    except (RuntimeError, NotImplementedError):
        return None


def _value(t: torch.Tensor, op: str, preexisting: bool) -> str | None:
    """A small tensor's values as first seen. One made before the capture (an earlier
    notebook cell's ``x``) is first seen as an op's input, possibly outside our dispatch
    handler, so it is read with gradmem's modes off."""
    if preexisting:
        return preview_now(t)
    return None if op in UNINITIALIZED else preview(t)


def _ptr(s, t: torch.Tensor) -> int | None:
    """The block's address, only to match it with the allocator's record (never an id)."""
    if _is_fake(t) or t.device.type == "meta":
        return None
    try:
        return s.data_ptr() or None
    except (RuntimeError, NotImplementedError):   # fake and meta storages have no data
        return None
