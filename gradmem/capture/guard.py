"""gradmem's own failures inside hooks: never the program's.

A hook that raises inside a torch mode or an autograd hook makes the program fail where
plain python runs it. So the bookkeeping in every hook is guarded: the first exception
from gradmem's own code is kept with its traceback, recording stops (events after it could
not be trusted), and the program carries on exactly as it would without gradmem. The
report then says the fault is gradmem's, never the scenario's. Only ``Exception`` is
caught: Ctrl-C still stops the run.
"""
from __future__ import annotations

import traceback

from ..events import EventKind


class Guard:
    def __init__(self, rec):
        self.rec = rec
        self.failure: dict | None = None   # type, message, traceback of gradmem's first fault

    @property
    def broken(self) -> bool:
        return self.failure is not None

    def failed(self, exc: BaseException) -> None:
        """Called from an ``except Exception`` in a hook: keep the first fault, stop recording."""
        if self.failure is None:
            self.failure = {"type": type(exc).__name__, "message": str(exc), "gradmem": True,
                            "traceback": "".join(traceback.format_exception(exc)), "step": self.rec.cursor.step}
            self.rec.emit(EventKind.NOTE.value, text=fault_note(self.failure))
        self.rec.active = False

    def call(self, fn, *args):
        """``fn(*args)`` for hooks whose result nobody needs; a fault is kept, not raised."""
        if self.failure is not None:
            return None
        try:
            return fn(*args)
        except Exception as exc:
            self.failed(exc)
            return None


def fault_note(failure: dict) -> str:
    return (f"gradmem's own code failed at step {failure['step']} ({failure['type']}: {failure['message']}); "
            "recording stopped there, so these reports cover the run only up to that step. The program "
            "itself ran on unaffected.")
