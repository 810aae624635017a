"""Fake tensors: run the program with shapes, dtypes, devices and storages but no data.

Under ``FakeTensorMode`` every tensor the program makes is fake from the start: factory
ops (``randn``, ``zeros``) and ``torch.tensor(data)`` (through ``lift_fresh``) return
``FakeTensor`` whose storage lives on the meta device, so nothing of the program's size is
ever allocated. The storage still reports its real ``nbytes()`` and can be weakly
referenced, and it dies when the program drops it, so the capture records the same events
as on real tensors.

Mode order: ``FakeTensorMode`` is an "infra" dispatch mode (``_mode_key = FAKE``): torch
always runs it below every user mode, whatever the order they were entered in, so our
``OpWatcher`` sees each op first and its fake outputs after.

Code that needs values (``.item()``, ``if loss > 0``, ``nonzero``, printing a tensor)
cannot run without data: ``needs_data`` recognises those failures so the user is told
which line needs data and to run a smaller real size instead.
"""
from __future__ import annotations

import contextlib
import sys

import torch
from torch._subclasses.fake_tensor import (DataDependentOutputException, DynamicOutputShapeException,
                                           FakeTensor, FakeTensorMode)
from torch.utils._python_dispatch import TorchDispatchMode

from .names import SKIP_DIRS


class NeedsRealData(RuntimeError):
    """The program asked for a fake tensor's values (printing it)."""


_PARAMETER_NEW = torch.nn.Parameter.__new__.__code__


def unrecorded(func) -> bool:
    """Ops a fake run dispatches that a real run does not, so they are not steps.

    ``prim.device``: a fake tensor's device is answered through dispatch, a real tensor's in
    C++. Anything inside ``nn.Parameter(...)``: see ``making_parameter``.
    """
    return func is torch.ops.prim.device.default or making_parameter()


def making_parameter() -> bool:
    """Inside ``nn.Parameter(data)``: a plain tensor is re-wrapped there without any op, a
    fake one by ``data.detach().requires_grad_()``. Neither allocates; the capture skips
    those calls so that the trace is the real run's."""
    return _called_from(_PARAMETER_NEW)


def _called_from(code, depth: int = 10) -> bool:
    frame = sys._getframe(1)
    while frame is not None and depth:
        if frame.f_code is code:
            return True
        frame, depth = frame.f_back, depth - 1
    return False


class UniformOnFakeCuda(TorchDispatchMode):
    """``uniform_`` on a fake CUDA tensor, on a torch built without CUDA.

    Fake mode decomposes ``uniform_`` into a prim that makes a real CUDA tensor, which a
    CPU-only build cannot (``nn.Linear`` initialises its weights with it). A fill changes
    values only, and a fake tensor has none, so the fill is the tensor itself. Entered
    below ``OpWatcher``, which still records the op.
    """

    @classmethod
    def _should_skip_dynamo(cls) -> bool:   # see OpWatcher: no torch._dynamo import
        return False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.uniform_.default and isinstance(args[0], FakeTensor) and args[0].device.type == "cuda":
            return args[0]
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def no_printing():
    """Printing a fake tensor from the program raises ``NeedsRealData`` instead of printing
    ``FakeTensor(..., size=...)`` as if it were the value. Torch's own uses are untouched."""
    original = FakeTensor.__repr__

    def guarded(self, *args, **kwargs):
        if not sys._getframe(1).f_code.co_filename.startswith(SKIP_DIRS):
            raise NeedsRealData("printing a tensor needs its values")
        return original(self, *args, **kwargs)

    FakeTensor.__repr__ = guarded
    try:
        yield
    finally:
        FakeTensor.__repr__ = original


@contextlib.contextmanager
def one_fake_mode():
    """``copy.deepcopy`` of a fake tensor copies its ``fake_mode`` attribute too, so the copy
    (``nn.TransformerEncoder`` clones its layer this way) belongs to a new mode, and the first
    op mixing it with the others fails ("Mixing fake modes NYI"). A mode is the run's shared
    context, not data: while the capture runs, deep-copying one gives the mode itself."""
    had = "__deepcopy__" in FakeTensorMode.__dict__
    original = FakeTensorMode.__dict__.get("__deepcopy__")
    FakeTensorMode.__deepcopy__ = lambda self, memo: self
    try:
        yield
    finally:
        if had:
            FakeTensorMode.__deepcopy__ = original
        else:
            del FakeTensorMode.__deepcopy__


def fake_modes() -> list:
    """Context managers to enter, in order, before the capture's own modes."""
    modes = [FakeTensorMode(allow_non_fake_inputs=True), no_printing(), one_fake_mode()]
    if not torch.cuda.is_available():
        modes.append(UniformOnFakeCuda())
    return modes


def needs_data(exc: BaseException) -> str | None:
    """What the program asked for that a fake run cannot give, or None for other errors."""
    if isinstance(exc, DataDependentOutputException):
        return "a tensor's value (.item(), float(), bool(), .tolist() or an `if` on a tensor)"
    if isinstance(exc, DynamicOutputShapeException):
        return f"a shape that depends on the values ({exc}: nonzero, unique, boolean-mask indexing)"
    if isinstance(exc, NeedsRealData):
        return "a tensor's values (printing it)"
    if isinstance(exc, RuntimeError) and ".numpy() is not supported for tensor subclasses" in str(exc):
        return "a tensor's values (.numpy())"
    return None


CPU_STAND_IN_NOTE = (
    "this torch is built without CUDA, so the fake run used CPU fake tensors in place of CUDA "
    "ones and their storages are reported on {device}. Sizes come from the same meta kernels; "
    "what differs are kernels chosen per device (cuDNN batch norm's reserve space, attention "
    "kernels), which follow the CPU path here."
)


def cuda_built() -> bool:
    return torch.version.cuda is not None or torch.version.hip is not None


def on_device(trace, device: str):
    """The trace of a CPU stand-in run, its storages put on ``device`` (see CPU_STAND_IN_NOTE)."""
    from ..trace import Event, Trace
    target = device if ":" in device else f"{device}:0"
    events = tuple(
        Event(e.seq, e.t_ns, e.kind, e.step, {**e.data, "device": target}) if e.kind == "alloc" else e
        for e in trace.events
    )
    notes = tuple(trace.meta.notes) + (CPU_STAND_IN_NOTE.format(device=target),)
    return Trace(trace.meta, events).with_meta(notes=notes, device=device)
