"""Saved-tensor hooks: when autograd saves a tensor, when backward uses it, when its
slot is released.

``pack`` returns a small ``Packed`` object that lives exactly as long as the saved slot;
its ``__del__`` is the "slot released" event. It holds a detached alias of the tensor (or
what an outer pack hook returned), and nothing else. Not the tensor itself: a saved
*output* holds its own ``grad_fn``, which holds the slot, a reference cycle that not even
``gc`` breaks, so a graph that never runs backward would never be freed. Autograd rebuilds
the unpacked tensor's grad_fn from the slot, so the alias loses nothing.

Autograd skips its version-counter check for slots that have hooks, so ``unpack`` makes it
instead: a tensor modified in place after it was saved fails as it does without gradmem.

Hooks nest as a stack and only the innermost pair runs. If hooks were already installed
when the capture started (the user's own, ``save_on_cpu``), ours wrap them: the outer
pack still runs, so the program behaves as it would without gradmem.
"""
from __future__ import annotations

import itertools
import sys

import torch
import torch.utils.checkpoint

from ..events import EventKind
from .cursor import Cursor
from .recorder import Recorder
from .values import exact_now

SAVED, UNPACKED, RELEASED = EventKind.SAVED.value, EventKind.UNPACKED.value, EventKind.RELEASED.value
CHECKPOINT_FILE = torch.utils.checkpoint.__file__   # as the interpreter spells its frames' files


class Packed:
    __slots__ = ("pid", "inner", "rec", "version")

    def __init__(self, pid: int, inner, rec: Recorder, version: int | None = None):
        self.pid = pid
        self.inner = inner
        self.rec = rec
        self.version = version   # the tensor's version when saved (None: an outer hook packed it)

    def __del__(self):
        if self.rec.active:
            self.rec.emit(RELEASED, pack=self.pid)


def modified_message(t: torch.Tensor, saved_version: int) -> str:
    """Autograd's own words for a saved tensor modified in place."""
    return ("one of the variables needed for gradient computation has been modified by an inplace "
            f"operation: [{t.dtype} {list(t.shape)}] is at version {t._version}; expected version "
            f"{saved_version} instead. (Checked by gradmem, whose saved-tensor hooks turn off "
            "autograd's own check.)")


def _stride(t: torch.Tensor):
    """Strides tell a transposed view (a Linear's weight.T) from its base; none for layouts
    without them (sparse, nested)."""
    try:
        return tuple(t.stride())
    except RuntimeError:
        return None


def _kept_for(frame) -> str:
    """"checkpoint" when torch.utils.checkpoint itself packed the tensor: non-reentrant
    checkpoint keeps its block's inputs this way (``_CheckpointFrame.save_inputs``), in a
    slot no backward node owns, to run the forward again in backward. The Python frame
    that called into autograd is checkpoint's own (two frames up, at most, through a
    list comprehension)."""
    for _ in range(2):
        if frame is None:
            break
        if frame.f_code.co_filename == CHECKPOINT_FILE:
            return "checkpoint"
        frame = frame.f_back
    return ""


class SavedTensorWatcher:
    def __init__(self, rec: Recorder, cursor: Cursor, storages, graph):
        self.rec = rec
        self.cursor = cursor
        self.storages = storages
        self.graph = graph                       # which backward node is running
        self._next = itertools.count(1)
        self._outer = torch._C._autograd._top_saved_tensors_default_hooks(False)
        self._cm = None

    def pack(self, t: torch.Tensor) -> Packed:
        pid = self.rec.guard.call(self._record_pack, t, _kept_for(sys._getframe(1))) or 0   # 0: gradmem broke, nothing recorded
        if self._outer:
            return Packed(pid, self._outer[0](t), self.rec)
        with self.cursor.paused_ops():   # not the program's op: not recorded
            alias = t.detach()
        return Packed(pid, alias, self.rec, t._version)

    def _record_pack(self, t: torch.Tensor, kept_for: str = "") -> int:
        pid = next(self._next)
        sid = self.storages.see(t)
        step = self.cursor.step + 1 if self.cursor.fresh_call else None   # inputs are saved before the op runs
        self.rec.emit(
            SAVED, step=step, pack=pid, storage=sid, shape=tuple(t.shape), stride=_stride(t),
            dtype=str(t.dtype).replace("torch.", ""), numel=t.numel(),
            element_size=t.element_size(), value=exact_now(t), **({"kept_for": kept_for} if kept_for else {}),
        )
        return pid

    def unpack(self, p: Packed) -> torch.Tensor:
        self.rec.guard.call(self._record_unpack, p)
        if self._outer:
            return self._outer[1](p.inner)
        if p.inner._version != p.version:
            raise RuntimeError(modified_message(p.inner, p.version))
        return p.inner

    def _record_unpack(self, p: Packed) -> None:
        self.rec.emit(UNPACKED, pack=p.pid, node=self.graph.current_node())

    def __enter__(self):
        self._cm = torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack)
        self._cm.__enter__()
        return self

    def __exit__(self, *exc):
        self._cm.__exit__(*exc)
        return False
