"""The page's "chain rule, node by node" section as plain data: the forward values, then
each backward node's rule with the recorded numbers (computed in analysis/derivation.py;
this only arranges them). Imports no torch."""
from __future__ import annotations

import pandas as pd

FORWARD_ROWS = 60     # forward tensors listed with their values
RULE_ROWS = 200       # nodes in the section: a derivation to read, not a table to scan


def _text(v) -> str:
    return v if isinstance(v, str) else ""


def forward_values(tensors: pd.DataFrame, limit: int = FORWARD_ROWS) -> list[dict]:
    """The tensors of the forward pass (and the data before it) that carry values, in order."""
    t = tensors[tensors["phase"].isin(["setup", "forward"]) & tensors["value"].map(bool_value)]
    t = t.sort_values("alloc_seq", kind="stable").head(limit)
    return [{"name": str(r["name"]), "value": r["value"], "made": _text(r.get("made_at")) or str(r["created_by"]),
             "role": r["role"], "saved_by": _text(r["saved_by"])} for r in t.to_dict("records")]


def bool_value(v) -> bool:
    return isinstance(v, str) and bool(v) and not v.startswith("(")


def rule_rows(analysis, limit: int = RULE_ROWS) -> list[dict]:
    """One entry per backward node run, in execution order, with its rule and numbers."""
    rows = []
    for r in analysis.nodes.head(limit).to_dict("records"):
        nr = analysis.rules.get(int(r["node"]))
        if nr is None:
            continue
        rows.append({
            "step": int(r["step"]), "name": str(r["name"]), "on_file": nr.on_file, "check": nr.check,
            "uses": [list(u) for u in nr.uses],
            "gradients": [{"target": g.target, "formula": g.formula, "steps": [list(s) for s in g.steps],
                           "numbers": g.numbers, "value": g.value, "torch": g.torch, "match": g.match}
                          for g in nr.gradients],
        })
    return rows
