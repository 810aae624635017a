"""The process's resident memory (RSS), sampled every few ms as a context track.

The allocator counts the bytes torch asked for; the OS counts pages the process touched
(allocator caches, the Python heap, libraries). A background thread reads RSS with psutil
every ``every_s`` seconds and emits an ``rss`` event stamped with the step in progress, so
the hot path pays nothing. Safe from any thread: ``Recorder.emit`` is.
"""
from __future__ import annotations

import threading

from ..events import EventKind

EVERY_S = 0.01


class ResidentSampler:
    def __init__(self, rec, every_s: float = EVERY_S):
        self.rec = rec
        self.every_s = every_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._process = None

    def start(self) -> bool:
        try:
            import psutil
        except ImportError:
            return False
        self._process = psutil.Process()
        self.sample()
        self._thread = threading.Thread(target=self._run, name="gradmem-rss", daemon=True)
        self._thread.start()
        return True

    def sample(self) -> None:
        self.rec.emit(EventKind.RSS, rss=self._process.memory_info().rss)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.sample()

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        self.sample()
