"""Human-readable byte counts and step labels, shared by every renderer."""
from __future__ import annotations


def human_bytes(n: float) -> str:
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{int(n)} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def training_step_words(call: int, calls: int) -> str:
    """'training step 2 of 3 (the peak's)': the one step a report speaks of, where backward
    ran more than once."""
    return f"training step {call} of {calls} (the peak's)"


def step_label(step, op: str = "") -> str:
    """'step 13 (AccumulateGrad(w))', or 'step 14 (after backward)' for a step whose op is
    already in parentheses, or 'the end' for a storage never freed (no step)."""
    if step is None or step != step:      # None or NaN: it was never freed
        return "the end"
    op = str(op or "")
    if not op:
        return f"step {int(step)}"
    return f"step {int(step)} {op}" if op.startswith("(") else f"step {int(step)} ({op})"
