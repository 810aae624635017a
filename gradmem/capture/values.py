"""Small-value previews, so a hand derivation can be checked against the report.

Only tensors of at most ``MAX_PREVIEW`` elements are read, only where they are created
(inside the dispatch handler, where our own modes are off) or where a ``.grad`` lands, and
never for fake or meta tensors, which have no data, nor for ``empty`` outputs, whose
memory holds whatever was there before.
"""
from __future__ import annotations

import math

import torch

from .native.loader import own_ops

MAX_PREVIEW = 16
NO_DATA = "(fake: no data)"   # the value of a small fake tensor: it has a shape but no values
# ops whose output is uninitialized memory until the kernel that called them fills it in
# (AccumulateGrad makes a .grad with empty_strided, then copies into it)
UNINITIALIZED = frozenset({"empty", "empty_like", "empty_strided", "empty_permuted", "new_empty",
                           "new_empty_strided"})


SHORT, EXACT = ".6g", ".9g"   # a preview a reader scans; enough digits to give a float32 back exactly


def _number(v, digits: str = SHORT) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        if math.isfinite(v) and v == int(v) and abs(v) < 1e15:
            return str(int(v))
        return format(v, digits)
    return str(v)


def _nested(v, digits: str = SHORT) -> str:
    if isinstance(v, list):
        return "[" + ", ".join(_nested(x, digits) for x in v) + "]"
    return _number(v, digits)


def preview(t: torch.Tensor, digits: str = SHORT) -> str | None:
    """'[12150, 16400]' for a small real tensor, NO_DATA for a small fake one, else None."""
    try:
        if t.numel() > MAX_PREVIEW or t.device.type == "meta":
            return None
        if _is_fake(t):
            return NO_DATA
        return _nested(t.detach().cpu().tolist(), digits)
    except Exception:  # data we cannot read (fake, functional wrappers): no preview
        return None


def preview_now(t: torch.Tensor, digits: str = SHORT) -> str | None:
    """``preview`` from a hook, where the program's ops are watched: reading is not an op."""
    if t is None or t.numel() > MAX_PREVIEW:
        return None
    with torch._C.DisableTorchFunction(), torch._C._DisableTorchDispatch(), own_ops():
        return preview(t, digits)


def exact_now(t: torch.Tensor) -> str | None:
    """A small tensor's values with every digit a float32 has: what a backward rule is
    evaluated on (analysis/rules.py), so the check against torch's gradient is not blurred
    by rounding in the preview."""
    return preview_now(t, EXACT)


INT64_WRAP = 2 ** 64


def int64(v):
    """torch hands a saved ``int64_t`` back as if it were unsigned: ``transpose(-2, -1)``'s
    ``_saved_dim0`` reads 2**64 - 2. The value the program passed is the signed one, and only
    that one fits the C long numpy and the reports expect."""
    return v - INT64_WRAP if isinstance(v, int) and not isinstance(v, bool) and v >= 2 ** 63 else v


def small_attr(v):
    """A node's non-tensor saved value (an exponent, a size, a dim) as plain JSON data, or
    None when it is something else (a tensor list, an object)."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return int64(v)
    if isinstance(v, (tuple, list)) and len(v) <= MAX_PREVIEW and all(isinstance(x, (bool, int, float)) for x in v):
        return [int64(x) for x in v]
    return None


def _is_fake(t: torch.Tensor) -> bool:
    return type(t).__name__ == "FakeTensor"
