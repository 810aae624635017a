"""Build (once) and load gradmem's native recorder, or say why it cannot be used.

The extension is compiled by ``torch.utils.cpp_extension.load`` the first time it is
needed, into a cache folder, and loaded from there afterwards. torch's own extension cache
key does not cover the torch version, so the version is part of the module's name: a new
torch builds a new module instead of loading one compiled against other headers. The
source includes only the headers it needs (not ``torch/extension.h``), which keeps a build
at about half a minute of CPU. Nothing here runs at ``pip install``: a build there would
need ``--no-build-isolation``, and the Python engine works without it.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import sys
from pathlib import Path

SOURCE = Path(__file__).with_name("recorder.cpp")
CACHE_ENV = "GRADMEM_NATIVE_CACHE"
# -DNDEBUG as libtorch is built: RecordFunction has a debug-only member (see recorder.cpp)
CFLAGS = ["-O2", "-DNDEBUG"]

_module = None
_error: str | None = None


def module_name() -> str:
    """The extension's name: the torch version and the source's hash are in it, so a new
    torch or a changed source never loads a stale build."""
    import torch
    version = re.sub(r"[^0-9A-Za-z]+", "_", torch.__version__)
    digest = hashlib.sha1(SOURCE.read_bytes() + " ".join(CFLAGS).encode()).hexdigest()[:10]
    return f"gradmem_native_t{version}_{digest}"


def cache_dir() -> Path:
    root = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "gradmem", "native")
    return Path(root) / module_name()


def compiler() -> str | None:
    """The C++ compiler cpp_extension would call, if it is on PATH."""
    return shutil.which(os.environ.get("CXX", "c++"))


def built_file() -> Path:
    return cache_dir() / f"{module_name()}.so"


def built() -> bool:
    return built_file().is_file()


def recording() -> bool:
    """Is a native capture recording now? (It holds torch's one profiler state, which
    torch's own check does not count: another profiler must not start meanwhile.)"""
    return _module is not None and bool(_module.running())


@contextlib.contextmanager
def own_ops():
    """Ops run in here on this thread are gradmem's (a value read in a hook), not the
    program's: a native capture does not record them."""
    if _module is None or not _module.running():
        yield
        return
    was = _module.set_busy(True)
    try:
        yield
    finally:
        _module.set_busy(was)


def load(progress=None):
    """The extension module, building it first if needed; None when it cannot be built
    (then ``why_not()`` says why). ``progress`` is called with one line before a build
    (stderr when not given: a first build takes half a minute, in a notebook too)."""
    global _module, _error
    if _module is not None or _error is not None:
        return _module
    if not built() and compiler() is None:
        _error = "no C++ compiler on PATH (set CXX or install g++): the native engine cannot be built"
        return None
    try:
        _module = _build(progress or stderr_progress)
    except Exception as exc:   # any build or load failure: the Python engine still works
        _error = f"the native engine failed to build: {type(exc).__name__}: {_last_line(exc)}"
    return _module


def why_not() -> str | None:
    return _error


def _load_built():
    """The built module, imported straight from its .so: no ninja run, so an environment
    whose torch sits at another path (a new virtual environment, same torch version) does
    not rebuild it. cpp_extension.load would, as its include paths differ."""
    import importlib.machinery
    import importlib.util
    import torch  # noqa: F401  (libtorch must be loaded before the extension)
    so = built_file()
    spec = importlib.util.spec_from_file_location(module_name(), so,
                                                  loader=importlib.machinery.ExtensionFileLoader(module_name(), str(so)))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _build(progress):
    if built():
        return _load_built()
    from torch.utils import cpp_extension
    d = cache_dir()
    d.mkdir(parents=True, exist_ok=True)
    with build_lock(d):
        if built():   # another process built it while this one waited
            return _load_built()
        progress(f"gradmem: building the native capture engine once (about 30 s), into {d}")
        return cpp_extension.load(name=module_name(), sources=[str(SOURCE)], build_directory=str(d),
                                  extra_cflags=CFLAGS, verbose=False)


@contextlib.contextmanager
def build_lock(d: Path):
    """Held while this process builds into ``d``. torch's own build lock is a plain file
    (``lock``) that a build killed midway (Ctrl-C) leaves behind, and every later build
    would wait on it for ever. This lock is an flock, released when its holder dies, and
    every gradmem build holds it first: so a ``lock`` file found while holding it is such
    a leftover, and is removed."""
    try:
        import fcntl
    except ImportError:   # not POSIX: torch's lock alone
        yield
        return
    with open(d / "gradmem-build.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            (d / "lock").unlink(missing_ok=True)
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _last_line(exc: Exception) -> str:
    lines = [ln for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__


def stderr_progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
