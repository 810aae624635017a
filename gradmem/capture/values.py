"""Small-value previews, so a hand derivation can be checked against the report.

Only tensors of at most ``MAX_PREVIEW`` elements are read, only where they are created
(inside the dispatch handler, where our own modes are off), and never for fake or meta
tensors, which have no data: a small fake tensor's value reads ``NO_DATA`` to say why.
(inside the dispatch handler, where our own modes are off) or where a ``.grad`` lands, and
never for fake or meta tensors, which have no data, nor for ``empty`` outputs, whose
memory holds whatever was there before.
"""
from __future__ import annotations

import math

import torch

MAX_PREVIEW = 16
NO_DATA = "(fake: no data)"   # the value of a small fake tensor: it has a shape but no values
# ops whose output is uninitialized memory until the kernel that called them fills it in
# (AccumulateGrad makes a .grad with empty_strided, then copies into it)
UNINITIALIZED = frozenset({"empty", "empty_like", "empty_strided", "empty_permuted", "new_empty",
                           "new_empty_strided"})


def _number(v) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        if math.isfinite(v) and v == int(v) and abs(v) < 1e15:
            return str(int(v))
        return f"{v:.6g}"
    return str(v)


def _nested(v) -> str:
    if isinstance(v, list):
        return "[" + ", ".join(_nested(x) for x in v) + "]"
    return _number(v)


def preview(t: torch.Tensor) -> str | None:
    """'[12150, 16400]' for a small real tensor, NO_DATA for a small fake one, else None."""
    try:
        if t.numel() > MAX_PREVIEW or t.device.type == "meta":
            return None
        if _is_fake(t):
            return NO_DATA
        return _nested(t.detach().cpu().tolist())
    except Exception:  # data we cannot read (fake, functional wrappers): no preview
        return None


def preview_now(t: torch.Tensor) -> str | None:
    """``preview`` from a hook, where the program's ops are watched: reading is not an op."""
    if t.numel() > MAX_PREVIEW:
        return None
    with torch._C.DisableTorchFunction(), torch._C._DisableTorchDispatch():
        return preview(t)


def _is_fake(t: torch.Tensor) -> bool:
    return type(t).__name__ == "FakeTensor"
