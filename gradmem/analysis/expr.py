"""A tiny expression language for backward rules: one tree gives both the plain-math text a
learner reads (``grad(error_squared) · 2 · error``) and the numbers (numpy), so the rule
the page shows is exactly the rule the test evaluates against torch's gradient.

Leaves: ``G`` (the gradient arriving for a node's output), ``S(field)`` (a saved tensor),
``A(field)`` (a saved non-tensor value: an exponent, a size), constants. Operators build
``Op`` nodes; ``Fn`` wraps a named function whose text is written out from its arguments'
texts. ``fold`` replaces constant parts by their values (``exponent − 1`` becomes ``1``,
``x^1`` becomes ``x``, ``· 1`` goes away) before either text or numbers are made.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

ATOM, POSTFIX, POWER, UNARY, PRODUCT, SUM = 6, 5, 4, 3, 2, 1


class Expr:
    prec = ATOM

    def __mul__(self, o): return Op("*", (self, lift(o)))
    def __rmul__(self, o): return Op("*", (lift(o), self))
    def __truediv__(self, o): return Op("/", (self, lift(o)))
    def __rtruediv__(self, o): return Op("/", (lift(o), self))
    def __add__(self, o): return Op("+", (self, lift(o)))
    def __radd__(self, o): return Op("+", (lift(o), self))
    def __sub__(self, o): return Op("-", (self, lift(o)))
    def __rsub__(self, o): return Op("-", (lift(o), self))
    def __neg__(self): return Op("neg", (self,))
    def __pow__(self, o): return Op("^", (self, lift(o)))
    def __matmul__(self, o): return Op("@", (self, lift(o)))

    @property
    def T(self): return Op("T", (self,))


def lift(v) -> Expr:
    return v if isinstance(v, Expr) else C(v)


@dataclass(frozen=True, eq=False)
class C(Expr):
    value: object


@dataclass(frozen=True, eq=False)
class Grad(Expr):
    output: int = 0


@dataclass(frozen=True, eq=False)
class S(Expr):
    field: str


@dataclass(frozen=True, eq=False)
class A(Expr):
    field: str


@dataclass(frozen=True, eq=False)
class Op(Expr):
    op: str
    args: tuple

    @property
    def prec(self):
        return {"*": PRODUCT, "@": PRODUCT, "/": PRODUCT, "+": SUM, "-": SUM, "neg": UNARY,
                "^": POWER, "T": POSTFIX}[self.op]


@dataclass(frozen=True, eq=False)
class Fn(Expr):
    """A named function: ``text`` writes it from its arguments' texts, ``fn`` computes it."""
    name: str
    args: tuple
    text: Callable[..., str]
    fn: Callable
    constant: bool = False   # a function of saved non-tensor values only: folded to its number


G = Grad(0)


# -- numbers --------------------------------------------------------------------------------
NUMERIC = {
    "*": lambda a, b: a * b, "/": lambda a, b: a / b, "+": lambda a, b: a + b, "-": lambda a, b: a - b,
    "neg": lambda a: -a, "^": lambda a, b: a ** b, "@": lambda a, b: a @ b, "T": lambda a: np.swapaxes(a, -1, -2) if a.ndim >= 2 else a,
}


def evaluate(e: Expr, env: "Env"):
    """The value of ``e``: numpy arrays for tensors, Python numbers for saved values."""
    if isinstance(e, C):
        return e.value
    if isinstance(e, Grad):
        return env.grad(e.output)
    if isinstance(e, S):
        return env.saved(e.field)
    if isinstance(e, A):
        return env.attr(e.field)
    if isinstance(e, Op):
        return NUMERIC[e.op](*(_array(evaluate(a, env)) for a in e.args))
    if isinstance(e, Fn):
        return e.fn(*(evaluate(a, env) for a in e.args))
    raise TypeError(e)


def _array(v):
    return np.asarray(v, dtype=float) if isinstance(v, (list, tuple, np.ndarray)) else v


# -- folding --------------------------------------------------------------------------------
def constant(e: Expr, env) -> bool:
    if isinstance(e, C):
        return True
    if isinstance(e, A):
        return env.has_attr(e.field)
    if isinstance(e, Op):
        return all(constant(a, env) for a in e.args)
    return False


def fold(e: Expr, env) -> Expr:
    """Constant parts become numbers; ``x^1``, ``x · 1`` and ``1 · x`` become ``x``."""
    if isinstance(e, (C, Grad, S)):
        return e
    if isinstance(e, A):
        return C(env.attr(e.field)) if env.has_attr(e.field) else e
    if isinstance(e, Fn):
        args = tuple(fold(a, env) for a in e.args)
        if e.constant and all(isinstance(a, C) for a in args):
            return C(e.fn(*(a.value for a in args)))
        return Fn(e.name, args, e.text, e.fn, e.constant)
    args = tuple(fold(a, env) for a in e.args)
    if all(isinstance(a, C) and isinstance(a.value, (int, float)) for a in args):
        return C(NUMERIC[e.op](*(a.value for a in args)))
    one = lambda a: isinstance(a, C) and a.value == 1   # noqa: E731
    if e.op in ("^", "/") and one(args[1]):
        return args[0]
    if e.op == "*" and one(args[1]):
        return args[0]
    if e.op == "*" and one(args[0]):
        return args[1]
    return Op(e.op, args)


# -- text -----------------------------------------------------------------------------------
SYMBOL = {"*": " · ", "@": " · ", "/": " / ", "+": " + ", "-": " − "}


def number(v) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float) and v == int(v) and abs(v) < 1e15:
        return str(int(v))
    if isinstance(v, float):
        return format(v, ".6g")
    if isinstance(v, (list, tuple)):
        return "(" + ", ".join(number(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    return str(v)


def text(e: Expr, names: Callable[[Expr], str]) -> str:
    """Plain math; ``names`` gives the text of a leaf (a program name, or a value)."""
    if isinstance(e, C):
        return number(e.value)
    if isinstance(e, (Grad, S, A)):
        return names(e)
    if isinstance(e, Fn):
        return e.text(*(text(a, names) for a in e.args))
    parts = [text(a, names) for a in e.args]
    if e.op == "neg":
        inner = _wrap(e.args[0], parts[0], UNARY, strict=True)
        return "−" + (f"({inner})" if inner.startswith(("-", "−")) else inner)
    if e.op == "T":
        if isinstance(e.args[0], S):
            return names(e)   # the namer knows whether the saved tensor is itself a transposed view
        return _wrap(e.args[0], parts[0], POSTFIX, strict=True) + "ᵀ"
    if e.op == "^":
        return _wrap(e.args[0], parts[0], POWER, strict=True) + "^" + _wrap(e.args[1], parts[1], POWER, strict=True)
    left = _wrap(e.args[0], parts[0], e.prec, strict=False)
    right = _wrap(e.args[1], parts[1], e.prec, strict=not (e.op in "*+" and getattr(e.args[1], "op", e.op) == e.op))
    return left + SYMBOL[e.op] + right


def _wrap(e: Expr, s: str, prec: int, strict: bool) -> str:
    inner = e.prec
    if isinstance(e, C) and isinstance(e.value, (int, float)) and e.value < 0:
        inner = UNARY
    return f"({s})" if inner < prec or (strict and inner == prec) else s


def steps(e: Expr) -> list[Expr]:
    """The inner products worth showing with their values, innermost first: every Op or Fn
    below the root whose arguments are not all leaves' plain values."""
    out: list[Expr] = []

    def walk(x: Expr, root: bool):
        for a in getattr(x, "args", ()):
            walk(a, False)
        if not root and isinstance(x, (Op, Fn)) and not (isinstance(x, Op) and x.op in ("T", "neg")):
            out.append(x)
    walk(e, True)
    return out


def leaves(e: Expr) -> list[Expr]:
    if isinstance(e, (Grad, S, A)):
        return [e]
    return [leaf for a in getattr(e, "args", ()) for leaf in leaves(a)]
