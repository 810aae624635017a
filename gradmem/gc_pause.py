"""The collector, kept off gradmem's own objects.

``paused``: off while gradmem builds its own plain data (tables, reports). A trace of
200,000 events keeps a few million objects alive; every full collection walks them all,
and building tables and reports allocates enough to trigger dozens: on a 30-step MLP they
cost about a fifth of analysis and writing. What is built there holds no reference
cycles worth collecting meanwhile; the collector runs again as soon as the block ends.
Never used around the profiled program, whose garbage is collected as it would be.

``Frozen``: around the profiled program, the objects that existed before it began are
left out of collections until it ends.

``ending_process``: the CLI, whose process exits once its command is done, says so
before it starts. Then what a paused block made is frozen as the block ends (left out of
every later collection; still freed by reference counting as it goes), and so is the heap
from before the program when the capture ends: re-enabling the collector with a million
young objects set off full collections that walked them (a third of a second on a 30-step
MLP) only to find none free. The price, cyclic garbage made before that moment is not
collected, is paid by a process that is about to exit anyway. A notebook or a
``gradmem.capture()`` block never takes this path.
"""
from __future__ import annotations

import contextlib
import gc


_ENDING = False


def ending_process() -> None:
    """This process exits when its command is done (see the module's docstring)."""
    global _ENDING
    _ENDING = True


def process_ends() -> bool:
    """Was ``ending_process`` said (the CLI)? Then a child may also write files (render/early.py)."""
    return _ENDING


@contextlib.contextmanager
def paused():
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            if _ENDING:
                gc.freeze()
            gc.enable()


class Frozen:
    """The collector's view of the heap frozen while a capture runs (``gc.freeze``): the
    objects that existed when it began (torch's, the model's) are left out of the
    collections the interpreter starts by itself, so the full ones that gradmem's own
    objects trigger walk only what was made since (on the Python engine those walks were a
    fifth of a 100-layer MLP's capture time). Young garbage is collected as always, and a
    ``gc.collect()`` the program calls collects everything, as without gradmem (``del
    model; gc.collect()`` frees a model from before the capture at once). A program that
    froze the heap itself is left as it is."""

    def __init__(self):
        self._collect = None
        self._wrapper = self._whole_collect   # one bound method, to know it again

    def __enter__(self) -> "Frozen":
        if gc.get_freeze_count() == 0:
            self._collect = gc.collect
            gc.freeze()
            gc.collect = self._wrapper
        return self

    def __exit__(self, *exc) -> bool:
        if self._collect is not None:
            if gc.collect is self._wrapper:
                gc.collect = self._collect
            if not _ENDING:
                gc.unfreeze()
            self._collect = None
        return False

    def _whole_collect(self, *args, **kwargs):
        """The program's own ``gc.collect()``: over the whole heap."""
        gc.unfreeze()
        try:
            return self._collect(*args, **kwargs)
        finally:
            gc.freeze()
