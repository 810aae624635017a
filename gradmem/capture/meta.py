"""What a trace says about its run: the settings it was recorded with, when it started,
how it ended (the failing line, if the program raised) and the caveats noticed."""
from __future__ import annotations

import datetime
import platform
import traceback
from dataclasses import dataclass, field

import torch

from ..events import EventKind
from ..trace import Meta
from .names import SKIP_DIRS
from .recorder import Recorder

FAKE_NOTE = ("estimate: run on fake tensors (shapes, no data); bytes and lifetimes are what a real run "
             "would record, values are absent")


@dataclass(frozen=True)
class Settings:
    """How a capture was asked to run (``gradmem.capture()``'s arguments)."""

    scenario: str = ""
    params: dict = field(default_factory=dict)
    retain_grad: str = "as-written"    # as-written | off | on
    fake: bool = False
    verify: bool = True
    attribution: bool = True           # module and source line of each storage (capture/modules.py)
    ranks: dict | None = None          # under torchrun: rank, world size, backend (learned at the first collective)
    engine: object = None              # the engine it runs with: a native.choose.Choice (None: python)

    @property
    def device(self) -> str:
        return str(self.params.get("device", "cpu"))


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def record_error(rec: Recorder, exc: BaseException) -> dict:
    """Emit the program's error; returns it as the trace's ``meta.error``."""
    file, line = _failing_line(exc)
    rec.emit(EventKind.ERROR, type=type(exc).__name__, message=str(exc), file=file, line=line)
    return {"type": type(exc).__name__, "message": str(exc), "file": file, "line": line}


def build_meta(settings: Settings, started: str, error: dict | None, rec: Recorder, ground_notes,
               distributed=None) -> Meta:
    engine = settings.engine
    name, reason = (engine.engine, engine.reason) if engine is not None else ("python", "")
    if engine is not None and engine.asked != "python" and name == "python":   # native was asked for: say why not
        ground_notes = [*ground_notes, f"captured by the Python engine: {reason}"]
    return Meta(
        scenario=settings.scenario, params=dict(settings.params), device=settings.device,
        torch_version=torch.__version__, gradmem_version=_version(),
        python_version=platform.python_version(), started_at=started,
        status="partial" if error else "complete", error=error,
        notes=(FAKE_NOTE,) * settings.fake + _notes(rec, ground_notes),
        mode="fake" if settings.fake else "real", retain_grad=settings.retain_grad, distributed=distributed,
        capture_engine=name, engine_reason=reason,
    )


def _notes(rec: Recorder, ground_notes) -> tuple:
    notes = dict.fromkeys(e.data["text"] for e in rec.of_kind(EventKind.NOTE))
    # slots no hook of ours packed and whose storage is unknown: a slot without any hook
    # (saved before the capture, a wrapped python number) has its storage, so its bytes count
    hidden = sum(e.data.get("storage") is None for e in rec.of_kind(EventKind.HIDDEN_SLOT))
    notes.update(dict.fromkeys(ground_notes))
    if hidden:
        notes[f"{hidden} saved tensors were packed by other saved-tensor hooks "
              "(checkpoint, save_on_cpu or the program's own): their bytes are not attributed"] = None
    return tuple(notes)


def _failing_line(exc: BaseException) -> tuple[str | None, int | None]:
    """The innermost traceback frame in the profiled program (not in torch or gradmem)."""
    found = (None, None)
    for fs in traceback.extract_tb(exc.__traceback__):
        if not fs.filename.startswith(SKIP_DIRS):
            found = (fs.filename, fs.lineno)
    return found


def _version() -> str:
    from .. import __version__
    return __version__
