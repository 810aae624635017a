"""``gradmem fit --suggest``: changes that would make the wanted value fit, each verified.

Every change is applied to a fake run of the scenario at the wanted value, exactly as the
printed code would apply it, and its peak is measured like the search's: a suggestion
states what a run showed, never what a rule of thumb expects. The changes:

- a smaller value: the search's answer (already measured);
- dropping ``retain_grad()``: the run with ``--retain-grad off`` (only when the scenario
  calls it), with the lines to delete;
- bf16 autocast of the model: ``model.forward = torch.autocast(...)(model.forward)``;
- activation checkpointing of the model's blocks (their ``forward`` wrapped in
  ``torch.utils.checkpoint.checkpoint``);
- for a model that is a plain ``nn.Sequential``: ``checkpoint_sequential`` over its layers
  (``model.forward`` replaced by it), at the best of a few segment counts;
- ``--device cuda`` only: ``save_on_cpu`` around the forward of each of the model's blocks,
  offered when it lowers the peak, with the host memory it needs at once.

How ``save_on_cpu`` is measured, and why not by running it. On a torch built without CUDA
a fake "CUDA" run is a CPU run relabelled (``FakeTensorMode`` makes CUDA tensors there, but
backward on them aborts: "PyTorch is not linked with support for cuda devices"), so
``tensor.cpu()`` inside save_on_cpu would be a no-op and its pinned copy would be counted as
device memory. What save_on_cpu(pin_memory=True) does to device memory is plain, though:
its pack hook replaces each saved tensor by a contiguous host copy of ``numel *
element_size`` bytes (autograd then holds only that copy, so the device storage is freed
once nothing else holds it), and its unpack hook makes a new device tensor from the copy
(``tensor.to(device)``: same size and dtype, contiguous) each time backward reads the slot.
``HostCopies`` is a hook pair that does the same to device memory without making the copy:
pack keeps the size, dtype, layout and device and counts the copy's bytes as held until the
slot is released; unpack returns ``torch.empty`` of that size on that device. Under fake
tensors no value matters, so the device bytes of that run are save_on_cpu's on a CUDA
machine, and the highest count of held copies is the host memory it needs at once
(``tests/cli/test_fit_suggest.py`` checks the pack side against the real save_on_cpu on a
real CPU run). It is not offered on ``--device cpu``: there the "host copy" is more memory
on the same device, and the run's peak can only rise.

The model is found without module attribution: a global forward pre-hook sees the first
module called from outside any other module that has parameters (the root), and its name
is the variable the calling code holds it in. Only names are kept, never a module.
"""
from __future__ import annotations

import functools
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from .analysis.fit import Point
from .errors import GradmemError, InternalError
from .render.units import human_bytes


def _bytes(n: int) -> str:
    return f"{n:,} B" if abs(n) < 1024 else f"{human_bytes(n)} ({n:,} B)"


@dataclass
class Suggestion:
    title: str
    code: str
    value: int
    peak_bytes: int
    saves_bytes: int
    fits: bool
    host_bytes: int | None = None          # save_on_cpu: the most bytes its host copies hold at once
    host_pinned_bytes: int | None = None   # ... each copy rounded up to a power of two, as pinned blocks are

    def result_text(self) -> str:
        verdict = "fits" if self.fits else "still does not fit"
        if self.host_bytes is None:
            return (f"peak {human_bytes(self.peak_bytes)} ({self.peak_bytes:,} B) at {self.value:,}, "
                    f"saves {_bytes(self.saves_bytes)}: {verdict} (verified on a fake run)")
        return (f"device peak {human_bytes(self.peak_bytes)} ({self.peak_bytes:,} B) at {self.value:,}, "
                f"saves {_bytes(self.saves_bytes)} of device memory: {verdict} (measured on a fake run whose saved "
                f"tensors in those modules were replaced as save_on_cpu replaces them); host memory for the copies: "
                f"{_bytes(self.host_bytes)} held at once, {_bytes(self.host_pinned_bytes)} as pinned blocks "
                "(each rounded up to a power of two)")

    def as_dict(self) -> dict:
        return {"title": self.title, "code": self.code, "value": self.value, "peak_bytes": self.peak_bytes,
                "saves_bytes": self.saves_bytes, "fits": self.fits, "host_bytes": self.host_bytes,
                "host_pinned_bytes": self.host_pinned_bytes}


@dataclass
class Model:
    """The root module, by name: the variable, its class and its children."""
    var: str
    cls: str
    children: list            # [(name, class name, has parameters)]
    sequential_layers: int = 0   # a plain nn.Sequential (not a subclass): its layers, for checkpoint_sequential


_GRADMEM_DIR = str(Path(__file__).resolve().parent)


# -- finding the model -------------------------------------------------------------------------
def _caller_name(module) -> str:
    """The name the user's code holds the module under (``model``), else ``model``: the
    first frame outside torch and gradmem with a local bound to it."""
    import torch
    dirs = (_GRADMEM_DIR, str(Path(torch.__file__).resolve().parent))
    frame = sys._getframe(1)
    while frame is not None:
        if not frame.f_code.co_filename.startswith(dirs):
            for k, v in frame.f_locals.items():
                if v is module and not k.startswith("_") and k != "self":
                    return k
        frame = frame.f_back
    return "model"


class _Roots:
    """Global module hooks that know when a call comes from outside every module."""

    def __init__(self, on_root):
        self.depth, self.on_root, self.handles = 0, on_root, []

    def __enter__(self):
        from torch.nn.modules import module as m
        self.handles = [m.register_module_forward_pre_hook(self._pre),
                        m.register_module_forward_hook(self._post, always_call=True)]
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()

    def _pre(self, module, args):
        if self.depth == 0 and any(True for _ in module.parameters()):
            self.on_root(module, True)
        self.depth += 1

    def _post(self, module, args, output):
        self.depth -= 1
        if self.depth == 0 and any(True for _ in module.parameters()):
            self.on_root(module, False)


def blocks(root) -> list:
    """[(name, class, has parameters)] of the root's children, where a child that is only a
    list of modules (``ModuleList``, ``ModuleDict``, a ``Sequential`` inside the model) stands
    for its own children: a transformer's ``layers.0``, ``layers.1``, ... rather than
    ``layers``."""
    from torch import nn
    out = []
    for name, child in root.named_children():
        inner = child.named_children() if isinstance(child, (nn.ModuleList, nn.ModuleDict, nn.Sequential)) else ()
        pairs = [(f"{name}.{k}", c) for k, c in inner] or [(name, child)]
        out += [(n, type(c).__name__, any(True for _ in c.parameters())) for n, c in pairs]
    return out


def find_model(measure, req, value: int, calibration=None) -> tuple[Model | None, Point]:
    """One fake run at ``value`` that also notes the model's names."""
    found = []

    def on_root(module, entering):
        if entering and not found:
            from torch import nn
            found.append(Model(_caller_name(module), type(module).__name__, blocks(module),
                               len(module) if type(module) is nn.Sequential else 0))

    p = measure(req, value, wrap=lambda: _Roots(on_root), calibration=calibration)
    return (found[0] if found else None), p


# -- the changes, each as a context manager around a run and the code that does the same ----------
def _at_root(apply):
    """A wrap that calls ``apply(root, entering)`` at the model's calls."""
    seen = []

    def on_root(module, entering):
        if not seen or seen[0] == id(module):
            seen[:1] = [id(module)]
            apply(module, entering)
    return lambda: _Roots(on_root)


def _autocast_stand_in(device_type: str) -> tuple[str, str]:
    """The autocast the fake run measures with, and what the title says of it. Without
    CUDA, ``torch.autocast("cuda")`` disables itself (a warning) and would "save" 0 B; the
    fake "CUDA" run is a CPU run relabelled, so CPU autocast is what casts there. Its list
    of bf16 ops has the matmuls, linears and convolutions CUDA's has, not every one."""
    import torch
    if device_type == "cuda" and not torch.cuda.is_available():
        return "cpu", " (measured with CPU autocast: this torch has no CUDA; CUDA's op list differs slightly)"
    return device_type, ""


def autocast_wrap(device_type: str):
    import torch
    state = {}

    def apply(root, entering):
        if entering:
            state["ctx"] = torch.autocast(device_type, dtype=torch.bfloat16)
            state["ctx"].__enter__()
        elif "ctx" in state:
            state.pop("ctx").__exit__(None, None, None)
    return _at_root(apply)


def forward_wrap(names: list[str], wrap_forward):
    """A wrap that replaces the forward of each named submodule by ``wrap_forward(forward)``
    at the model's first call, as the printed code does once the model is built."""
    done = []

    def apply(root, entering):
        if entering and not done:
            done.append(True)
            for n in names:
                sub = root.get_submodule(n)
                sub.forward = wrap_forward(sub.forward)
    return _at_root(apply)


def checkpoint_wrap(names: list[str]):
    from torch.utils.checkpoint import checkpoint
    return forward_wrap(names, lambda forward: functools.partial(checkpoint, forward, use_reentrant=False))


def _names(children) -> list[str]:
    return [n for n, _, has in children if has]


def checkpoint_code(model: Model, names: list[str]) -> str:
    return ("import functools\nfrom torch.utils.checkpoint import checkpoint\n"
            f"for name in {names!r}:   # after {model.var} is built\n"
            f"    sub = {model.var}.get_submodule(name)\n"
            "    sub.forward = functools.partial(checkpoint, sub.forward, use_reentrant=False)")


# -- checkpoint_sequential, for a model that is a plain nn.Sequential -----------------------------
class SequentialCheckpoint:
    """The model's calls run ``checkpoint_sequential(model, segments, input)``, as the printed
    ``model.forward = functools.partial(checkpoint_sequential, ...)`` makes them. Module
    ``__call__`` reads ``forward`` before any hook runs, so the model's first call cannot be
    redirected from a hook; ``nn.Sequential.forward`` is patched for the run instead, and
    sends only the root (told by the same global hooks) to checkpoint_sequential, which calls
    ``model[i]`` and never ``model.forward``, so it does not recurse."""

    def __init__(self, segments: int):
        self.segments, self.root = segments, None
        self.roots = _Roots(self._on_root)

    def _on_root(self, module, entering):
        if entering and self.root is None:
            self.root = id(module)

    def __enter__(self):
        from torch import nn
        from torch.utils.checkpoint import checkpoint_sequential
        self.original = original = nn.Sequential.forward

        def forward(module, input):
            if id(module) == self.root:
                return checkpoint_sequential(module, self.segments, input, use_reentrant=False)
            return original(module, input)
        nn.Sequential.forward = forward
        self.roots.__enter__()
        return self

    def __exit__(self, *exc):
        from torch import nn
        self.roots.__exit__(*exc)
        nn.Sequential.forward = self.original


def sequential_code(model: Model, segments: int) -> str:
    v = model.var
    return ("import functools\nfrom torch.utils.checkpoint import checkpoint_sequential\n"
            f"{v}.forward = functools.partial(checkpoint_sequential, {v}, {segments}, use_reentrant=False)"
            f"   # after {v} is built\n"
            f"# the same as calling checkpoint_sequential({v}, {segments}, x, use_reentrant=False) in place of {v}(x)")


def segment_counts(layers: int) -> list[int]:
    """A few segment counts to try: 2 and those around sqrt(layers), the count that
    balances the segment inputs kept against the one segment recomputed at a time."""
    import math
    root = math.isqrt(layers)
    return sorted({k for k in (2, root, root + 1) if 2 <= k <= layers})


# -- save_on_cpu, measured by a hook pair with the same effect on device memory --------------------
class HostCopies:
    """Saved-tensor hooks with save_on_cpu(pin_memory=True)'s effect on device memory (see the
    module docstring), that count the host bytes its copies would hold instead of making them.
    The packed object keeps no tensor: only size, dtype, layout, device and a ``_Held`` whose
    end (the slot's release) gives the copy's bytes back."""

    def __init__(self):
        self.now = self.peak = 0                 # bytes of the copies held, and the most at once
        self.pinned_now = self.pinned_peak = 0   # the same, each copy rounded up to a power of two
        self.fault: BaseException | None = None

    def pack(self, tensor):
        try:
            nbytes = tensor.numel() * tensor.element_size()
            return tensor.size(), tensor.dtype, tensor.layout, tensor.device, _Held(self, nbytes)
        except Exception as exc:               # gradmem's fault, not the scenario's
            self.fault = exc
            raise

    def unpack(self, packed):
        import torch
        size, dtype, layout, device, _ = packed
        try:
            return torch.empty(size, dtype=dtype, layout=layout, device=device)
        except Exception as exc:
            self.fault = exc
            raise

    def hooks(self):
        import torch
        return torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack)


class _Held:
    """One host copy's bytes, held from pack until autograd releases the slot. PyTorch's
    pinned-memory allocator rounds every block up to a power of two (``CachingHostAllocator``,
    ``PowerOf2Ceil``), so the pinned count rounds each copy the same way."""
    __slots__ = ("copies", "nbytes", "pinned")

    def __init__(self, copies: HostCopies, nbytes: int):
        self.copies, self.nbytes, self.pinned = copies, nbytes, (1 << (nbytes - 1).bit_length()) if nbytes else 0
        copies.now += nbytes
        copies.pinned_now += self.pinned
        copies.peak = max(copies.peak, copies.now)
        copies.pinned_peak = max(copies.pinned_peak, copies.pinned_now)

    def __del__(self):
        self.copies.now -= self.nbytes
        self.copies.pinned_now -= self.pinned


def within(hooks, forward):
    """``forward`` run inside the hooks, as the printed ``on_cpu`` runs it inside save_on_cpu."""
    @functools.wraps(forward)
    def run(*args, **kwargs):
        with hooks():
            return forward(*args, **kwargs)
    return run


def save_on_cpu_wrap(names: list[str], copies: HostCopies):
    return forward_wrap(names, functools.partial(within, copies.hooks))


def save_on_cpu_code(model: Model, names: list[str]) -> str:
    return ("import functools\nimport torch\n\n\n"
            "def on_cpu(forward):\n"
            "    @functools.wraps(forward)\n"
            "    def run(*args, **kwargs):\n"
            "        with torch.autograd.graph.save_on_cpu(pin_memory=True):\n"
            "            return forward(*args, **kwargs)\n"
            "    return run\n\n\n"
            f"for name in {names!r}:   # after {model.var} is built\n"
            f"    sub = {model.var}.get_submodule(name)\n"
            "    sub.forward = on_cpu(sub.forward)")


def retain_grad_lines(req) -> list[tuple[int, str]]:
    text = req.scenario.path.read_text(encoding="utf-8").splitlines()
    return [(i, line.strip()) for i, line in enumerate(text, 1) if re.search(r"\.retain_grad\(\s*\)", line)]


# -- all of them ------------------------------------------------------------------------------------
def suggestions(s, measure, on_line=None) -> list[Suggestion]:
    """The verified changes at the wanted value; [] when it already fits. ``measure`` is
    ``gradmem.fit.measure`` (passed in: the search imports this module, not the reverse)."""
    req = s.req
    say = on_line or (lambda line: None)
    want = req.want
    if want is None or (s.answer is not None and want <= s.answer.value):
        return []
    say(f"gradmem fit: trying changes at {req.name}={want:,}")
    cal = s.calibration
    model, base = find_model(measure, req, want, cal)
    if base not in s.points:
        s.points.append(base)
    out = [_make(f"use {req.name}={s.answer.value:,} (the largest that fits)",
                 f"main({req.name}={s.answer.value})   # or: -p {req.name}={s.answer.value}", s.answer, base)]
    lines = retain_grad_lines(req)
    if lines:
        p = measure(req, want, retain_grad="off", calibration=cal)
        code = "\n".join(f"# delete {req.scenario.path}:{i}: {text}" for i, text in lines)
        out.append(_make("drop retain_grad()", code, p, base))
    if model is not None:
        out += _model_changes(measure, req, want, model, base, say, cal)
    return out


def _model_changes(measure, req, want: int, model: Model, base: Point, say, cal) -> list[Suggestion]:
    device_type = "cuda" if req.device.startswith("cuda") else "cpu"
    out = []
    say(f"gradmem fit: bf16 autocast of {model.var}")
    measured_as, note = _autocast_stand_in(device_type)
    p = measure(req, want, wrap=autocast_wrap(measured_as), calibration=cal)
    out.append(_make(f"bf16 autocast of {model.var} ({model.cls}){note}",
                     f'{model.var}.forward = torch.autocast("{device_type}", dtype=torch.bfloat16)({model.var}.forward)',
                     p, base))
    names = _names(model.children)
    if names:
        say(f"gradmem fit: activation checkpointing of {model.var}'s children {', '.join(names)}")
        p = measure(req, want, wrap=checkpoint_wrap(names), calibration=cal)
        out.append(_make(f"checkpoint {model.var}'s children {', '.join(names)}", checkpoint_code(model, names), p, base))
    if model.sequential_layers >= 2:
        out.append(_sequential(measure, req, want, model, base, say, cal))
    if device_type == "cuda" and model.children:
        out += _save_on_cpu(measure, req, want, model, base, say, cal)
    return out


def _sequential(measure, req, want: int, model: Model, base: Point, say, cal) -> Suggestion:
    """checkpoint_sequential at each of a few segment counts; the lowest peak is offered."""
    tried = []
    for k in segment_counts(model.sequential_layers):
        say(f"gradmem fit: checkpoint_sequential of {model.var} in {k} segments")
        tried.append((measure(req, want, wrap=functools.partial(SequentialCheckpoint, k), calibration=cal), k))
    p, k = min(tried, key=lambda pk: (pk[0].peak_bytes, pk[1]))
    counts = ", ".join(str(c) for _, c in tried)
    return _make(f"checkpoint_sequential of {model.var} ({model.sequential_layers} layers) in {k} segments "
                 f"(lowest peak of {counts} segments tried)", sequential_code(model, k), p, base)


def _save_on_cpu(measure, req, want: int, model: Model, base: Point, say, cal) -> list[Suggestion]:
    """Every block, with or without parameters (a ReLU saves its output too): a saved tensor
    leaves the device only when every slot that holds it was packed to the host. Offered only
    when the device peak drops."""
    names = [n for n, _, _ in model.children]
    say(f"gradmem fit: save_on_cpu of {model.var}'s children {', '.join(names)}")
    copies = HostCopies()
    try:
        p = measure(req, want, wrap=save_on_cpu_wrap(names, copies), calibration=cal)
    except GradmemError as exc:
        if copies.fault is None:
            raise
        raise InternalError(f"gradmem's own save_on_cpu measuring hooks failed: {copies.fault!r}; "
                            "the scenario is not at fault.") from exc
    sg = _make(f"save_on_cpu of {model.var}'s children {', '.join(names)}", save_on_cpu_code(model, names), p, base)
    sg.host_bytes, sg.host_pinned_bytes = copies.peak, copies.pinned_peak
    if sg.saves_bytes <= 0:
        say(f"gradmem fit: save_on_cpu of {model.var}'s children does not lower the device peak "
            f"({p.peak_bytes:,} B against {base.peak_bytes:,} B): not offered")
        return []
    return [sg]


def _make(title: str, code: str, p: Point, base: Point) -> Suggestion:
    return Suggestion(title, code, p.value, p.peak_bytes, base.peak_bytes - p.peak_bytes, p.fits)
