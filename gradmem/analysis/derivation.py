"""Each backward node's chain-rule step with the program's names and the recorded numbers.

For a node with a rule on file (rules.py), the rule is written with the names the program
uses (``grad(error) = grad(error_squared) · 2 · error``) and, where the tensors were small
enough for their values to be recorded, evaluated on those values step by step
(``2 · error = [-240, -730]``) and compared with the gradient torch produced at that node.
Pure Python and numpy: no torch.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from . import rule_math as m
from .expr import C, Expr, Fn, Grad, Op, S, evaluate, fold, steps, text
from .rules import ACCUMULATE, rule_for
from .tables import each_row, known

_WORDS = {"nan": "NaN", "inf": "Infinity", "True": "true", "False": "false"}


def parse_value(v):
    """A recorded preview ('[[10, 15], [30, 40]]', 'nan', 'True') as a numpy array, or None."""
    if not isinstance(v, str) or v.startswith("("):
        return None
    try:
        data = json.loads(re.sub(r"-?inf|nan|True|False", lambda mt: ("-" if mt.group(0)[0] == "-" else "")
                                 + _WORDS[mt.group(0).lstrip("-")], v))
    except ValueError:
        return None
    return np.asarray(data, dtype=float)


class Missing(Exception):
    """A value the rule needs was not recorded (the tensor was too big for a preview)."""


@dataclass
class Env:
    grads: list                              # the gradients arriving, by output
    saved: dict                              # field -> value (None: saved, but no value recorded)
    attrs: dict

    def grad(self, k):
        v = self.grads[k] if k < len(self.grads) else None
        if v is None:
            raise Missing(f"grad {k}")
        return v

    def saved_value(self, f):
        if f not in self.saved:
            return None   # not saved (an optional weight that is absent)
        if self.saved[f] is None:
            raise Missing(f)
        return self.saved[f]

    def attr(self, f):
        return self.attrs.get(f)

    def has_values(self) -> bool:
        return any(v is not None for v in self.grads) or any(v is not None for v in self.saved.values())

    def has_attr(self, f):
        return f in self.attrs


class _Values:
    """``evaluate``'s view of an Env: the saved() accessor named as expr.py expects."""

    def __init__(self, env: Env):
        self.env = env

    def grad(self, k): return self.env.grad(k)
    def saved(self, f): return self.env.saved_value(f)
    def attr(self, f): return self.env.attr(f)
    def has_attr(self, f): return self.env.has_attr(f)


def show(v) -> str:
    """A value as the page prints it: '[-240, -730]', '0.5'."""
    if isinstance(v, np.ndarray):
        return _nested(v.tolist())
    return _nested(v)


def _nested(v) -> str:
    if isinstance(v, list):
        return "[" + ", ".join(_nested(x) for x in v) + "]"
    if isinstance(v, float):
        return str(int(v)) if v == int(v) and abs(v) < 1e15 else format(v, ".6g")
    return str(v)


@dataclass
class Gradient:
    target: str                  # "grad(w)"
    formula: str                 # "xᵀ · grad(output)"
    steps: list = field(default_factory=list)    # [(text, value)] inner products, innermost first
    numbers: str = ""            # "[[10, 30], [15, 40]] · [120, 365]"
    value: str = ""              # gradmem's arithmetic on the recorded values
    torch: str = ""              # the gradient torch produced there
    match: bool | None = None    # None: no values to compare


def _fit(value, like):
    """The rule's value in the shape torch gave: autograd sums a gradient over the dims its
    input was broadcast along before handing it on."""
    value = np.asarray(value, dtype=float)
    if like is None or value.shape == like.shape:
        return value
    try:
        return m.sum_to(np.broadcast_to(value, np.broadcast_shapes(value.shape, like.shape)), like.shape)
    except ValueError:
        return value


def close(a, b, incoming: float = 0.0) -> bool:
    """Equal up to float32 rounding. The absolute part scales with the larger of the result
    and the gradient that arrived (``incoming``): a gradient that is zero in exact
    arithmetic (LayerNorm's input gradient when the loss is the output's squared norm) is
    float32 noise of the incoming gradient's size in torch, and other noise here."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        return False
    scale = float(np.nanmax(np.abs(b))) if b.size and np.isfinite(b).any() else 1.0
    return bool(np.allclose(a, b, rtol=1e-4, atol=1e-5 * max(scale, incoming, 1e-3), equal_nan=True))


def _largest(values) -> float:
    """The largest finite magnitude among some recorded values (0 when none)."""
    best = 0.0
    for v in values:
        arr = np.asarray(v, dtype=float) if v is not None else np.zeros(0)
        finite = arr[np.isfinite(arr)] if arr.size else arr
        if finite.size:
            best = max(best, float(np.abs(finite).max()))
    return best


_TEMPLATES: dict = {}   # (node name, input, attrs) -> (folded rule, its text with placeholders)
_SLOT = re.compile("\x00(.)([^\x00]*)\x00")


def _placeholder(leaf: Expr) -> str:
    if isinstance(leaf, Grad):
        return f"\x00g{leaf.output}\x00"
    if isinstance(leaf, S):
        return f"\x00s{leaf.field}\x00"
    if isinstance(leaf, Op):   # the transpose of a saved tensor
        return f"\x00t{leaf.args[0].field}\x00"
    return getattr(leaf, "field", "?")


def _leaf_namer(names):
    """text()'s namer from a placeholder namer."""
    def named(leaf: Expr) -> str:
        p = _placeholder(leaf)
        return names(p[1], p[2:-1]) if p.startswith("\x00") else p
    return named


def _template(key, expr: Expr, env: Env):
    """Folding and writing a rule depends only on the node kind and its saved non-tensor
    values, not on the names: done once per kind, then the names are filled in."""
    found = _TEMPLATES.get(key)
    if found is None:
        try:
            e = fold(expr, _Values(env))
        except Exception:   # a saved value the constant parts cannot take: written unfolded
            e = expr
        found = _TEMPLATES[key] = (e, text(e, _placeholder))
    return found


def _attrs_key(attrs: dict) -> tuple:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in attrs.items()))


_PARTS: dict[str, tuple] = {}   # template -> (literal, kind, key, literal, ...), as _SLOT splits it


def _fill(template: str, names) -> str:
    """The template with each placeholder named: ``_SLOT.sub`` without a regex pass per
    node (a 30-step MLP has 9,000 nodes)."""
    parts = _PARTS.get(template)
    if parts is None:
        parts = _PARTS[template] = tuple(_SLOT.split(template))
    out = [parts[0]]
    for i in range(1, len(parts), 3):
        out += (names(parts[i], parts[i + 1]), parts[i + 2])
    return "".join(out)


def gradient(target: str, key, expr: Expr, env: Env, names, torch_value) -> Gradient:
    e, template = _template(key, expr, env)
    g = Gradient(target, _fill(template, names))
    if not env.has_values():
        return g
    vals = _Values(env)
    named = _leaf_namer(names)
    try:
        g.steps = [(text(s, named), show(_small(evaluate(s, vals)))) for s in steps(e)]
        value = _small(_fit(evaluate(e, vals), torch_value))
        g.numbers = text(_with_values(e, vals), named)
    except Exception:   # noqa: BLE001 - Missing (a value not recorded), or values the rule cannot take
        # the numbers only illustrate the rule: without them its text still stands and the
        # report is still written; tests/test_rules.py holds every rule's numbers to torch
        g.steps = []
        return g
    g.value = show(value)
    if torch_value is not None:
        g.torch, g.match = show(torch_value), close(value, torch_value, _largest(env.grads))
    return g


SHOWN = 16   # elements: as the capture's value previews (capture/values.py MAX_PREVIEW)


class _TooBig(ValueError):
    """A value the page would not print: the numbers of a rule are for small tensors."""


def _small(v):
    """``v``, if it is small enough to print. A rule evaluated on one small value (the
    loss's gradient, 1) and a large saved size gives a large array: printing a million
    numbers took seconds and said nothing."""
    if np.size(v) > SHOWN:
        raise _TooBig(np.shape(v))
    return v


def _with_values(e: Expr, vals) -> Expr:
    """The root with each argument replaced by its value: '[0.5, 0.5] · [-240, -730]'."""
    if isinstance(e, Op):
        return Op(e.op, tuple(C(_plain(evaluate(a, vals))) for a in e.args))
    if isinstance(e, Fn):
        return Fn(e.name, tuple(C(_plain(evaluate(a, vals))) if not isinstance(a, C) else a for a in e.args),
                  e.text, e.fn, e.constant)
    return C(_plain(evaluate(e, vals)))


def _plain(v):
    return _Printed(show(v)) if isinstance(v, np.ndarray) else v


class _Printed(str):
    """A value already printed; C() of it prints as itself."""


NAME_SUFFIX = {"TBackward0": "ᵀ", "TransposeBackward0": "ᵀ"}   # a view's output, named by its base


@dataclass
class Graph:
    """What the rules need to know about the recorded graph, as plain dicts."""
    name: dict                 # node -> node name (PowBackward0)
    next: dict                 # node -> ((node, output_nr) | None, ...)
    leaf: dict                 # AccumulateGrad node -> leaf storage
    attrs: dict                # node -> saved non-tensor values
    outputs: dict              # (node, output_nr) -> storage
    slots: dict                # node -> {field: pack}
    saved: dict                # pack -> (storage, shape, stride, value)
    ends: dict                 # node -> (values_in, values_out)
    storage_names: dict

    def tensor_name(self, node, nr) -> str:
        if node in self.leaf:
            return self.storage_names.get(self.leaf[node], f"S{self.leaf[node]}")
        suffix = NAME_SUFFIX.get(self.name.get(node))
        inputs = self.next.get(node, ())
        if suffix and inputs and inputs[0] is not None:
            return self.tensor_name(*inputs[0]) + suffix   # weight.T is named by weight
        sid = self.outputs.get((node, nr))
        return self.storage_names.get(sid, f"S{sid}") if sid is not None else f"output {nr} of {self.name.get(node)}"

    def saved_name(self, node, f) -> str:
        pack = self.slots.get(node, {}).get(f)
        if pack is None:
            return "1"
        sid, shape, stride, value = self.saved[pack]
        if isinstance(pack, tuple) and value is not None and "[" not in value:
            return value   # a Python number torch wrapped as a tensor: its value is its name
        if sid is None:
            return f   # packed by other hooks: gradmem never saw the tensor, so torch's name for it
        base = self.storage_names.get(sid, f"S{sid}")
        return base + "ᵀ" if _transposed(shape, stride) else base


def _transposed(shape, stride) -> bool:
    """A 2-D view with its strides swapped: ``w.t()`` of a contiguous ``w``."""
    if not shape or not stride or len(shape) != 2:
        return False
    return tuple(stride) == (1, shape[0]) and tuple(stride) != (shape[1], 1)


def graph_of(tables: dict, storage_names: dict) -> Graph:
    nodes = tables["node"].drop_duplicates("node", keep="last")
    slots: dict = {}
    for pack, nid, f in each_row(tables["slot"], "pack", "node", "field"):
        slots.setdefault(int(nid), {})[f] = pack
    saved = {p: (int(sid) if known(sid) else None, sh, st, v)
             for p, sid, sh, st, v in each_row(tables["saved"], "pack", "storage", "shape", "stride", "value")}
    for nid, f, hook, sid, v in each_row(tables["hidden_slot"], "node", "field", "hook", "storage", "value"):
        key = ("hidden", int(nid), f)
        if hook is None and known(sid):   # saved without hooks: a number torch wrapped as a tensor
            slots.setdefault(int(nid), {})[f] = key
            saved[key] = (int(sid), None, None, v)
        elif hook is not None:   # packed by other hooks (checkpoint's): saved, its value unseen
            slots.setdefault(int(nid), {})[f] = key
            saved[key] = (None, None, None, None)
    rows = list(each_row(nodes, "node", "name", "next", "leaf", "attrs"))
    return Graph(
        name={int(n): name for n, name, *_ in rows},
        next={int(n): tuple(tuple(x) if x is not None and x[0] is not None else None for x in (nx or ()))
              for n, _, nx, *_ in rows},
        leaf={int(n): int(lf) for n, _, _, lf, _ in rows if known(lf)},
        attrs={int(n): ({k: m.signed(v) for k, v in a.items()} if isinstance(a, dict) else {}) for n, *_, a in rows},
        outputs={(int(n), int(o)): int(sid) for n, o, sid in each_row(tables["tensor"], "node", "output_nr", "storage")
                 if known(n)},
        slots=slots, saved=saved, storage_names=storage_names,
        ends={int(n): (vi or (), vo or ())
              for n, vi, vo in each_row(tables["node_end"], "node", "values_in", "values_out")},
    )


@dataclass
class NodeRule:
    node: int
    name: str
    on_file: bool
    gradients: list                      # [Gradient]
    uses: list                           # [(field, tensor name, what it is used for)]

    @property
    def rule(self) -> str:
        return "; ".join(f"{g.target} = {g.formula}" for g in self.gradients)

    @property
    def numbers(self) -> str:
        parts = []
        for g in self.gradients:
            if g.value:
                inner = "".join(f"{t} = {v}; " for t, v in g.steps)
                parts.append(f"{inner}{g.target} = {g.numbers} = {g.value}")
        return "; ".join(parts)

    @property
    def check(self) -> str:
        marks = [g.match for g in self.gradients if g.match is not None]
        if not marks:
            return ""
        return "matches torch" if all(marks) else "differs from torch"


def node_rule(gr: Graph, nid: int) -> NodeRule:
    name = gr.name.get(nid, "?")
    values_in, values_out = gr.ends.get(nid, ((), ()))
    if name == ACCUMULATE:
        leaf = gr.tensor_name(nid, 0)
        return NodeRule(nid, name, True, [Gradient(f"{leaf}.grad", f"grad({leaf})")], [])
    attrs = gr.attrs.get(nid, {})
    rule = rule_for(name, attrs)
    fields = gr.slots.get(nid, {})
    if rule is None:
        return NodeRule(nid, name, False, [], [(f, gr.saved_name(nid, f), "") for f in fields])
    env = Env([parse_value(v) for v in values_in],
              {f: parse_value(gr.saved[p][3]) for f, p in fields.items() if p in gr.saved}, attrs)
    names = _namer(gr, nid)
    grads = []
    attrs_key = _attrs_key(attrs) if attrs else ()
    nexts = gr.next.get(nid, ())
    for i, expr in rule.grads.items():
        target = nexts[i] if i < len(nexts) else None
        if target is None:
            continue   # that input needs no gradient: autograd skips it
        torch_value = parse_value(values_out[i]) if i < len(values_out) else None
        key = (name, i, attrs_key)
        grads.append(gradient(f"grad({gr.tensor_name(*target)})", key, expr, env, names, torch_value))
    uses = [(f, gr.saved_name(nid, f), rule.uses.get(f.split("[")[0], "")) for f in fields]
    return NodeRule(nid, name, True, grads, uses)


def _namer(gr: Graph, nid: int):
    """names(kind, key) for the placeholders: g0 (the gradient arriving for output 0),
    s<field> (a saved tensor), t<field> (its transpose)."""
    def names(kind: str, key: str) -> str:
        if kind == "g":
            return f"grad({gr.tensor_name(nid, int(key))})"
        name = gr.saved_name(nid, key)
        if kind == "t":
            return name[:-1] if name.endswith("ᵀ") else name + "ᵀ"   # (wᵀ)ᵀ is w
        return name
    return names


def node_rules(tables: dict, storage_names: dict) -> dict[int, NodeRule]:
    gr = graph_of(tables, storage_names)
    return {nid: node_rule(gr, nid) for nid in gr.name}


RULE_COLUMNS = ["rule", "rule_values", "rule_check", "saved_for"]
NO_RULE = "no rule on file"


def saved_for(r: NodeRule) -> str:
    """'self = error: the base of the power rule; ...' (fields without a known use: just named)."""
    return "; ".join(f"{f} = {name}" + (f": {use}" if use else "") for f, name, use in r.uses)


def with_rules(nodes: pd.DataFrame, rules: dict[int, NodeRule]) -> pd.DataFrame:
    """The per-node table with each node's rule, the rule on the recorded numbers, whether
    those numbers match the gradient torch produced, and what each saved field is for."""
    out = nodes.copy()
    found = [rules.get(int(n)) for n in out["node"].tolist()]
    out["rule"] = [(r.rule or NO_RULE) if r and r.on_file else NO_RULE for r in found]
    out["rule_values"] = [r.numbers if r else "" for r in found]
    out["rule_check"] = [r.check if r else "" for r in found]
    out["saved_for"] = [saved_for(r) if r else "" for r in found]
    return out
