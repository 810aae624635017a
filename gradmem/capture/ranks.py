"""Multi-process runs: which rank this process is, the collectives it calls, and storages
that are resized in place.

- Rank facts come from the environment ``torch.distributed.run`` (torchrun) sets for every
  worker (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``TORCHELASTIC_RUN_ID``, or the id
  ``gradmem profile --nproc-per-node`` gives its job in ``GRADMEM_RUN_ID``); the backend
  is read from the default process group when the first collective runs (a scenario
  usually destroys its group before it returns).
- Collectives: since torch 2.0 every ``ProcessGroup`` call goes through the dispatcher as a
  ``c10d::`` op (``allreduce_``, ``broadcast_``, ``_allgather_base_``,
  ``_reduce_scatter_base_``...), also the ones DDP's C++ reducer makes in backward, so the
  op watcher sees them with the tensors they read and write. Each becomes a
  ``collective`` event: its name, its index in this process's order (the same order on
  every rank, which is what the merge aligns ranks by), and the storages it touched.
- Resizes: FSDP2 frees an unsharded parameter by ``untyped_storage().resize_(0)`` and
  re-allocates it with ``resize_(n)``; that is no dispatcher op, and the storage object
  lives on, so neither the op watcher nor the storage's weakref would notice. While a
  capture runs, ``UntypedStorage.resize_`` is wrapped: a resize frees the storage's
  current bytes (a ``free`` event) and, if it grows again, starts a new generation (an
  ``alloc`` with ``op="resize_"`` and ``lineage`` naming the first generation's id).
"""
from __future__ import annotations

import os
import socket

import torch

from ..events import EventKind

ENV_KEYS = ("RANK", "LOCAL_RANK", "WORLD_SIZE")


def rank_env(env=None) -> dict | None:
    """This process's place in a torchrun job, or None outside one."""
    env = os.environ if env is None else env
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return None
    try:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        local = int(env.get("LOCAL_RANK", rank))
    except ValueError:
        return None
    return {"rank": rank, "local_rank": local, "world_size": world, "host": socket.gethostname(),
            "run_id": env.get("GRADMEM_RUN_ID") or env.get("TORCHELASTIC_RUN_ID", ""), "backend": None}


def rank_meta(info: dict | None, device: str) -> dict | None:
    """The trace's ``distributed`` metadata: the rank facts, the backend, and the memory
    this rank can use (a GPU's total memory; on CPU the host's, shared by its ranks)."""
    if info is None:
        return None
    return {**info, "backend": info["backend"] or _backend(), "device": device, "capacity_bytes": _capacity(device)}


def _capacity(device: str) -> int | None:
    try:
        if device.startswith("cuda") and torch.cuda.is_available():
            return int(torch.cuda.get_device_properties(torch.device(device)).total_memory)
        import psutil
        return int(psutil.virtual_memory().total)
    except (ImportError, RuntimeError, AssertionError):
        return None


_WRAPPER: dict[type, bool] = {torch.Tensor: False, torch.nn.Parameter: False}   # per type: on the hot path


def inner_tensors(t: torch.Tensor) -> list[torch.Tensor] | None:
    """The plain tensors inside a wrapper subclass (DTensor's ``_local_tensor``), or None
    for a tensor that owns its storage. A wrapper's own storage holds no memory: counting
    it would count the global size on top of the local shard. Called for every tensor an
    op sees, so the answer for plain tensors is one dict lookup."""
    cls = type(t)
    wrapper = _WRAPPER.get(cls)
    if wrapper is None:
        wrapper = _WRAPPER[cls] = hasattr(cls, "__tensor_flatten__")
    if not wrapper:
        return None
    try:
        names = t.__tensor_flatten__()[0]
    except Exception:   # noqa: BLE001 - a subclass we cannot look into: treat it as plain
        return None
    inner = [getattr(t, n, None) for n in names]
    return [x for x in inner if isinstance(x, torch.Tensor)]


def _flat_tensors(obj, out: list) -> list:
    if isinstance(obj, torch.Tensor):
        out.append(obj)
    elif isinstance(obj, (list, tuple)):
        for x in obj:
            _flat_tensors(x, out)
    return out


class Collectives:
    """Records each ``c10d::`` op the op watcher sees (see the module docstring)."""

    def __init__(self, rec, storages, info: dict | None):
        self.rec = rec
        self.storages = storages
        self.info = info
        self.count = 0

    def seen(self, name: str, args, kwargs) -> None:
        if self.info is not None and self.info["backend"] is None:
            self.info["backend"] = _backend()
        tensors = _flat_tensors(list(args) + list((kwargs or {}).values()), [])
        sids = tuple(dict.fromkeys(s for s in (self.storages.see(t) for t in tensors) if s is not None))
        self.rec.emit(EventKind.COLLECTIVE.value, op=name, index=self.count, storages=sids,
                      nbytes=sum(t.numel() * t.element_size() for t in tensors))
        self.count += 1


def is_collective(func) -> bool:
    return getattr(func, "namespace", "") == "c10d"


def _backend() -> str | None:
    try:
        import torch.distributed as dist
        return str(dist.get_backend()) if dist.is_available() and dist.is_initialized() else None
    except (RuntimeError, ValueError):
        return None


class StorageResizes:
    """While entered, ``UntypedStorage.resize_`` reports every resize to ``storages``."""

    def __init__(self, storages):
        self.storages = storages
        self._had_own = False
        self._original = None

    def __enter__(self) -> "StorageResizes":
        cls = torch.UntypedStorage
        self._had_own = "resize_" in cls.__dict__
        self._original = original = cls.resize_
        storages = self.storages

        def resize_(storage, size):
            before = storage.nbytes()
            out = original(storage, size)
            if storage.nbytes() != before:
                storages.resized(storage)
            return out

        cls.resize_ = resize_
        return self

    def __exit__(self, *exc) -> bool:
        cls = torch.UntypedStorage
        if self._had_own:
            cls.resize_ = self._original
        else:
            del cls.resize_
        return False
