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
    notes.update(dict.fromkeys(ground_notes))
    notes.update(dict.fromkeys(_hidden_slot_notes(rec)))
    return tuple(notes)


CHECKPOINT_HOOK = "_checkpoint_hook."


def _hook_owner(qualname: str) -> str:
    """``save_on_cpu.__init__.<locals>.unpack_from_cpu`` -> ``save_on_cpu``: what made the hook."""
    owner = qualname.split(".<locals>")[0]
    return owner[:-len(".__init__")] if owner.endswith(".__init__") else owner


def _hidden_slot_notes(rec: Recorder) -> list[str]:
    """Slots no hook of ours packed and whose storage is unknown, by whose hooks packed
    them. A slot without any hook (saved before the capture, a wrapped python number)
    has its storage, so it is no such slot."""
    hooks = [e.data.get("hook") or "" for e in rec.of_kind(EventKind.HIDDEN_SLOT) if e.data.get("storage") is None]
    by_checkpoint = sum(h.startswith(CHECKPOINT_HOOK) for h in hooks)
    other = sorted({_hook_owner(h) for h in hooks if not h.startswith(CHECKPOINT_HOOK)})
    notes = []
    if by_checkpoint:
        notes.append(f"{by_checkpoint} saved slot(s) were packed by torch.utils.checkpoint, which keeps no tensor for them: "
                     "backward runs the block's forward again to remake them (tensors.csv: recomputed = True)")
    if other:
        count = len(hooks) - by_checkpoint
        notes.append(f"{count} saved slot(s) were packed by other saved-tensor hooks ({', '.join(other)}): gradmem "
                     "does not see what those hooks keep, so no storage is marked as saved for these slots")
    return notes


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
