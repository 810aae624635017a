"""Which ``nn.Module`` was running, and which line of user code, when each op ran.

Two cheap mechanisms, both emitting events that analysis turns into a ``module`` and a
``source`` for every storage (no per-storage work here):

- ``ModuleWatcher``: ``nn.Module._call_impl`` wrapped for the capture's duration (a
  forward that raises still closes its span). Each module call emits ``module_enter`` /
  ``module_exit``; the op events between them belong to it. Torch's global forward hooks
  would do the same, but any global hook sends every module call down torch's slow path
  (about 12 us a call before a hook runs); the wrapper leaves the fast path to modules
  without hooks of their own. A module is
  named once, when its root first runs: the root by the program variable that holds it
  (as parameter names are), its submodules as ``named_modules(prefix=root)`` spells them.
- ``SourceWatcher``: the innermost frame outside torch and gradmem, read for each op
  (a walk of a few frames with a per-code-object cache); a ``source`` event is emitted
  only when that file:line changes, so ops of one line share one event.

Hooks never raise into the program: a failure is recorded as a note that blames gradmem.
"""
from __future__ import annotations

import sys
import weakref

import torch

from ..events import EventKind
from .names import SKIP_DIRS, _read_locals

_Module = torch.nn.Module

# plain strings for the hot path (an Enum lookup per event costs more)
MODULE, ENTER, EXIT = EventKind.MODULE.value, EventKind.MODULE_ENTER.value, EventKind.MODULE_EXIT.value
SOURCE, NOTE = EventKind.SOURCE.value, EventKind.NOTE.value

HOOK_FAILED = "gradmem's module hook failed ({error}); module attribution after it may be incomplete. This is gradmem's fault, not the program's."


class ModuleWatcher:
    def __init__(self, rec, storages, entry_frame):
        self.rec = rec
        self.storages = storages
        self.entry_frame = entry_frame     # callable: the frame that entered the capture
        self._paths = _Paths()
        self._stack: list[str] = []
        self._used: set[str] = set()      # every path given, even of a module since gone
        self._on = False
        self._original = self._wrapper = None
        self._failed = False
        self._spans = rec.spans   # the native recorder's own: no event made in Python per module call

    def __enter__(self) -> "ModuleWatcher":
        """Entered and left with the capture's modes: the wrapper is in place only while it
        records."""
        self._original = _Module.__dict__["_call_impl"]
        self._wrapper = self._make_wrapper()
        _Module._call_impl = self._wrapper
        self._on = True
        return self

    def __exit__(self, *exc) -> None:
        self._on = False   # a wrapper someone else wrapped stays in their chain, passing through
        if _Module.__dict__.get("_call_impl") is self._wrapper:
            _Module._call_impl = self._original

    def _make_wrapper(self):
        """The native recorder's wrapper, in C, where it has one: a module named already
        goes straight to its spans, with no Python frame per call (a new module, or a
        failure, still goes through ``_pre`` and ``_post``)."""
        in_c = getattr(self.rec, "module_call", None)
        if in_c is None or self._spans is None:
            return _wrap_call(self._original, self._pre, self._post, self)
        enter, exit_ = self._spans
        return in_c(self._original, self._pre, self._post, enter, exit_, self._paths._by_id, self._stack, self,
                    self._fail)

    def _pre(self, module) -> None:
        try:
            path = self._paths.get(module)
            if path is None:
                path = self._name(module)
            self._stack.append(path)
            if self._spans is not None:
                self._spans[0](path)
            else:
                self.rec.emit(ENTER, module=path)
        except Exception as exc:   # noqa: BLE001 - never fail the program
            self._fail(exc)

    def _post(self, module, output) -> None:
        try:
            path = self._paths.get(module)
            if path is None or not self._stack:
                return
            if path in self._stack:    # unwind modules whose exit was never seen
                while self._stack.pop() != path:
                    pass
            if self._spans is not None:   # the tensors of a tuple or list, or the one tensor
                self._spans[1](path, output)
            else:
                items = output if isinstance(output, (list, tuple)) else (output,)
                self.rec.emit(EXIT, module=path, outputs=self._outputs([t for t in items if isinstance(t, torch.Tensor)]))
        except Exception as exc:   # noqa: BLE001
            self._fail(exc)

    def _outputs(self, tensors: list) -> tuple:
        lookup = self.storages.lookup
        return tuple(sid for sid in (lookup(t) for t in tensors) if sid is not None)

    def _name(self, module) -> str:
        """A module seen for the first time: a child of the running module, or a root."""
        if self._stack:
            parent = self._stack[-1]
            for name, child in _parent_children(self._paths, parent):
                if child is module:
                    return self._register(module, f"{parent}.{name}")
            return self._register(module, f"{parent}.({type(module).__name__})")
        return self._register(module, self._root_name(module))

    def _register(self, root, prefix: str) -> str:
        for name, sub in root.named_modules(prefix=prefix, remove_duplicate=True):
            if sub not in self._paths:
                self._paths[sub] = name
                self._used.add(name)
                self.rec.emit(MODULE, module=name, type=type(sub).__name__)
        self._paths[root] = prefix
        self._used.add(prefix)
        return prefix

    def _root_name(self, module) -> str:
        """The program variable holding the root (innermost user frame first); else the
        path under a variable holding a module it belongs to (``model[0](x)`` runs
        ``model.0``); else its class, made unique (``Linear#2``) so that two modules never
        share a name."""
        entry = self.entry_frame()
        frame = sys._getframe(2)
        inside = None
        while frame is not None:
            if not frame.f_code.co_filename.startswith(SKIP_DIRS):
                for name, value in _read_locals(frame):
                    if name.startswith("_") or name == "self":
                        continue
                    if value is module:
                        return self._unique(name)
                    if inside is None and isinstance(value, torch.nn.Module):
                        inside = _path_in(value, module, name)
            if frame is entry:
                break
            frame = frame.f_back
        return self._unique(inside or type(module).__name__)

    def _unique(self, name: str) -> str:
        taken = self._used
        if name not in taken:
            return name
        k = 2
        while f"{name}#{k}" in taken:
            k += 1
        return f"{name}#{k}"

    def _fail(self, exc: Exception) -> None:
        if not self._failed:
            self._failed = True
            self.rec.emit(NOTE, text=HOOK_FAILED.format(error=f"{type(exc).__name__}: {exc}"))


def _wrap_call(original, pre, post, watcher):
    """``Module._call_impl`` with a span around it: ``pre(module)`` before, and
    ``post(module, output)`` after (output None when the forward raised)."""
    def _call_impl(self, *args, **kwargs):
        if not watcher._on:
            return original(self, *args, **kwargs)
        pre(self)
        try:
            result = original(self, *args, **kwargs)
        except BaseException:
            post(self, None)
            raise
        post(self, result)
        return result
    return _call_impl


class _Paths:
    """module -> its path, holding no module: a dict by ``id`` whose entries go with their
    module. A ``WeakKeyDictionary`` makes a weak reference on every lookup, and a lookup
    runs twice per module call."""

    def __init__(self):
        self._by_id: dict[int, tuple] = {}   # id(module) -> (weakref, path)

    def get(self, module):
        entry = self._by_id.get(id(module))
        return entry[1] if entry is not None and entry[0]() is module else None

    def __contains__(self, module) -> bool:
        return self.get(module) is not None

    def __setitem__(self, module, path: str) -> None:
        key = id(module)
        self._by_id[key] = (weakref.ref(module, lambda _ref, key=key: self._drop(key, _ref)), path)

    def _drop(self, key: int, ref) -> None:
        entry = self._by_id.get(key)
        if entry is not None and entry[0] is ref:
            del self._by_id[key]

    def items(self):
        return [(m, path) for m, path in ((r(), path) for r, path in self._by_id.values()) if m is not None]


def _path_in(holder, module, name: str) -> str | None:
    """``model.0`` when ``module`` is ``holder``'s submodule ``0`` and ``holder`` is ``model``."""
    for sub, child in holder.named_modules(prefix=name):
        if child is module:
            return sub
    return None


def _parent_children(paths, parent_path: str):
    """Children of the module at ``parent_path`` (found by path, never held)."""
    for mod, path in list(paths.items()):
        if path == parent_path:
            return list(mod.named_children())
    return []


class SourceWatcher:
    """The user's line behind each op. Called once per op, so kept to a short frame walk."""

    def __init__(self, rec):
        self.rec = rec
        # file name -> is it the user's (outside torch and gradmem). Keyed by the name, not the
        # code object: hashing a code object hashes its bytecode (measured: ~100 us per op)
        self._user: dict[str, bool] = {}
        self._last: tuple | None = None

    def at_op(self) -> None:
        frame = sys._getframe(2)
        user = self._user
        while frame is not None:
            file = frame.f_code.co_filename
            mine = user.get(file)
            if mine is None:
                mine = user[file] = not file.startswith(SKIP_DIRS)
            if mine:
                break
            frame = frame.f_back
        where = (frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name) if frame is not None else None
        if where != self._last:
            self._last = where
            if where is None:
                self.rec.emit(SOURCE, file=None, line=None, function=None)
            else:
                self.rec.emit(SOURCE, file=where[0], line=where[1], function=where[2])
