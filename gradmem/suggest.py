"""``gradmem fit --suggest``: changes that would make the wanted value fit, each verified.

Every change is applied to a fake run of the scenario at the wanted value, exactly as the
printed code would apply it, and its peak is measured like the search's: a suggestion
states what a run showed, never what a rule of thumb expects. The changes:

- a smaller value: the search's answer (already measured);
- dropping ``retain_grad()``: the run with ``--retain-grad off`` (only when the scenario
  calls it), with the lines to delete;
- bf16 autocast of the model: ``model.forward = torch.autocast(...)(model.forward)``;
- activation checkpointing of the model's children (their ``forward`` wrapped in
  ``torch.utils.checkpoint.checkpoint``);
- ``save_on_cpu`` of the model's children, only where the run's tensors are on CUDA and
  the fake run can place the saved copies on the host (a torch built with CUDA).

The model is found without module attribution: a global forward pre-hook sees the first
module called from outside any other module that has parameters (the root), and its name
is the variable the calling code holds it in. Only names are kept, never a module.
"""
from __future__ import annotations

import contextlib
import functools
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from .analysis.fit import Point
from .render.units import human_bytes


@dataclass
class Suggestion:
    title: str
    code: str
    value: int
    peak_bytes: int
    saves_bytes: int
    fits: bool

    def result_text(self) -> str:
        verdict = "fits" if self.fits else "still does not fit"
        return (f"peak {human_bytes(self.peak_bytes)} ({self.peak_bytes:,} B) at {self.value:,}, "
                f"saves {human_bytes(self.saves_bytes)} ({self.saves_bytes:,} B): {verdict} (verified on a fake run)")

    def as_dict(self) -> dict:
        return {"title": self.title, "code": self.code, "value": self.value, "peak_bytes": self.peak_bytes,
                "saves_bytes": self.saves_bytes, "fits": self.fits}


@dataclass
class Model:
    """The root module, by name: the variable, its class and its children."""
    var: str
    cls: str
    children: list            # [(name, class name, has parameters)]


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


def find_model(measure, req, value: int, calibration=None) -> tuple[Model | None, Point]:
    """One fake run at ``value`` that also notes the model's names."""
    found = []

    def on_root(module, entering):
        if entering and not found:
            kids = [(n, type(c).__name__, any(True for _ in c.parameters())) for n, c in module.named_children()]
            found.append(Model(_caller_name(module), type(module).__name__, kids))

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


def checkpoint_wrap(names: list[str]):
    from torch.utils.checkpoint import checkpoint
    done = []

    def apply(root, entering):
        if entering and not done:
            done.append(True)
            for n in names:
                sub = root.get_submodule(n)
                sub.forward = functools.partial(checkpoint, sub.forward, use_reentrant=False)
    return _at_root(apply)


def _names(children, model) -> list[str]:
    return [n for n, _, has in children if has]


def checkpoint_code(model: Model, names: list[str]) -> str:
    return ("import functools\nfrom torch.utils.checkpoint import checkpoint\n"
            f"for name in {names!r}:   # after {model.var} is built\n"
            f"    sub = {model.var}.get_submodule(name)\n"
            "    sub.forward = functools.partial(checkpoint, sub.forward, use_reentrant=False)")


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
    p = measure(req, want, wrap=autocast_wrap(device_type), calibration=cal)
    out.append(_make(f"bf16 autocast of {model.var} ({model.cls})",
                     f'{model.var}.forward = torch.autocast("{device_type}", dtype=torch.bfloat16)({model.var}.forward)',
                     p, base))
    names = _names(model.children, model)
    if names:
        say(f"gradmem fit: activation checkpointing of {model.var}'s children {', '.join(names)}")
        p = measure(req, want, wrap=checkpoint_wrap(names), calibration=cal)
        out.append(_make(f"checkpoint {model.var}'s children {', '.join(names)}", checkpoint_code(model, names), p, base))
    return out


def _make(title: str, code: str, p: Point, base: Point) -> Suggestion:
    return Suggestion(title, code, p.value, p.peak_bytes, base.peak_bytes - p.peak_bytes, p.fits)
