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
from .recorder import Recorder
from .names import user_line
from .values import UNINITIALIZED, _is_fake, preview

ALLOC, FREE = EventKind.ALLOC.value, EventKind.FREE.value   # plain strs: the hot path
LIFT_OPS = frozenset({"lift_fresh", "lift_fresh_copy", "lift"})   # torch.tensor(data) in the program


class Storages:
    def __init__(self, rec: Recorder):
        self.rec = rec
        self._ids: dict[int, int] = {}                 # id(storage object) -> gradmem id
        self._refs: dict[int, weakref.ref] = {}        # gradmem id -> weakref with callback
        self._next = itertools.count(1)

    def lookup(self, t: torch.Tensor) -> int | None:
        try:
            return self._ids.get(id(t.untyped_storage()))
        except (RuntimeError, NotImplementedError):    # sparse and other storage-less tensors
            return None

    def see(self, t: torch.Tensor, op: str = "", preexisting: bool = True, factory: bool = False,
            recompute: bool = False, grad_args: bool = False) -> int | None:
        """The id of ``t``'s storage, tracking it first if it is new."""
        try:
            s = t.untyped_storage()
        except (RuntimeError, NotImplementedError):
            return None
        sid = self._ids.get(id(s))
        if sid is None:
            flags = {k: True for k, v in (("recompute", recompute), ("grad_args", grad_args)) if v}
            if op in LIFT_OPS:
                flags["line"] = user_line()
            sid = self._track(s, t, op, preexisting, factory, flags)
        return sid

    def _track(self, s, t: torch.Tensor, op: str, preexisting: bool, factory: bool, flags: dict) -> int:
        sid = next(self._next)
        key = id(s)
        self._ids[key] = sid
        self._refs[sid] = weakref.ref(s, lambda _ref, key=key, sid=sid: self._freed(key, sid))
        self.rec.emit(
            ALLOC, storage=sid, nbytes=s.nbytes(), device=str(t.device),
            dtype=str(t.dtype).replace("torch.", ""), shape=tuple(t.shape), op=op,
            preexisting=preexisting, factory=factory, value=None if preexisting or op in UNINITIALIZED else preview(t),
            **flags,
            ptr=_ptr(s, t),
        )
        return sid

    def _freed(self, key: int, sid: int) -> None:
        if self._ids.get(key) == sid:
            del self._ids[key]
        self._refs.pop(sid, None)
        self.rec.emit(FREE, storage=sid)

    def close(self) -> None:
        """Stop watching: dropping the weakrefs means their callbacks never run."""
        self._refs.clear()
        self._ids.clear()


def _ptr(s, t: torch.Tensor) -> int | None:
    """The block's address, only to match it with the allocator's record (never an id)."""
    if _is_fake(t) or t.device.type == "meta":
        return None
    try:
        return s.data_ptr() or None
    except (RuntimeError, NotImplementedError):   # fake and meta storages have no data
        return None
