"""Random small autograd programs for the property tests, as plain data.

A program is a list of op specs ``(kind, pick, variant)`` over a growing pool of tensors.
``build`` turns it into Python source, one readable line per op (``t4 = t1 @ t2.t()``),
so Hypothesis shrinks a failure to a short program that can be pasted and run. Shapes are
symbolic (``M``, ``N``, ``H``) and the same source runs at two scales: small, where every
tensor has at most 16 elements and the report carries values, and big, where the
allocator's few scalar allocations do not matter.

The builder only writes ops torch accepts for any scale: it tracks each tensor's shape,
whether it requires grad, is a grad leaf or a view of one, may be non-contiguous, or may
overlap itself (expanded). Programs torch still rejects (an in-place op on a tensor saved
for backward) are rejected by the test, not here. Nothing here imports torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

SMALL = {"M": 2, "N": 4, "H": 2}
BIG = {"M": 32, "N": 64, "H": 32}
MAX_SMALL_NUMEL = 16          # the report holds values up to 16 elements
LEAF_SHAPES = [("M", "N"), ("N",), ("N", "M"), ("N", "N")]
KINDS = ["unary", "add", "mul", "matmul", "reduce", "view", "inplace", "retain"]
UNARY = ["{}.sin()", "{}.exp()", "{}.tanh()", "{}.relu()", "{} ** 2", "{}.pow(3)"]
REDUCE = [("{}.sum()", None), ("{}.mean()", None), ("{}.sum(0)", 0), ("{}.mean(-1)", -1)]


@dataclass(frozen=True)
class Entry:
    name: str
    shape: tuple                 # dims as expressions over M, N, H: ("M", "N*M")
    grad: bool                   # requires grad
    leaf: bool = False           # a leaf that requires grad
    obj: str = ""                # the tensor object it is (in-place results alias it)
    contiguous: bool = True      # known contiguous (False: maybe not)
    overlap: bool = False        # may have elements sharing memory (expanded)
    leaf_view: bool = False      # a view of a grad leaf: no in-place ops allowed


@dataclass
class Program:
    lines: list = field(default_factory=list)
    pool: list = field(default_factory=list)
    leaves: list = field(default_factory=list)       # names of grad leaves
    retained: list = field(default_factory=list)     # object names retain_grad() was called on
    backwards: int = 1

    @property
    def source(self) -> str:
        return "\n".join(self.lines) + "\n"

    def aliases(self, obj: str) -> list[str]:
        """Variable names bound to the tensor object ``obj``, in order of binding."""
        return [e.name for e in self.pool if e.obj == obj]

    def add(self, line_rhs: str, entry: Entry) -> None:
        self.lines.append(f"{entry.name} = {line_rhs}")
        self.pool.append(entry)


def numel(shape: tuple, scale: dict) -> int:
    return math.prod(eval(d, {}, dict(scale)) for d in shape)


def fits(shape: tuple) -> bool:
    return numel(shape, SMALL) <= MAX_SMALL_NUMEL


def broadcasts_into(other: tuple, shape: tuple) -> bool:
    return len(other) <= len(shape) and tuple(shape[len(shape) - len(other):]) == tuple(other)


# -- ops: each returns (source of the right-hand side, new Entry) or None to skip ----------
def op_unary(p: Program, a: Entry, variant: int, name: str):
    return UNARY[variant % len(UNARY)].format(a.name), Entry(name, a.shape, a.grad, obj=name, contiguous=a.contiguous)


def _operand(p: Program, a: Entry, variant: int) -> Entry:
    b = p.pool[variant % len(p.pool)]
    return b if broadcasts_into(b.shape, a.shape) else a


def op_binary(symbol: str):
    def op(p: Program, a: Entry, variant: int, name: str):
        b = _operand(p, a, variant)
        contiguous = a.contiguous and (b.contiguous or len(b.shape) < len(a.shape))
        return f"{a.name} {symbol} {b.name}", Entry(name, a.shape, a.grad or b.grad, obj=name, contiguous=contiguous)
    return op


def op_matmul(p: Program, a: Entry, variant: int, name: str):
    if len(a.shape) not in (1, 2):
        return None
    b = p.pool[variant % len(p.pool)]
    if len(b.shape) in (1, 2) and b.shape[0] == a.shape[-1]:
        rhs, shape, grad = f"{a.name} @ {b.name}", a.shape[:-1] + b.shape[1:], a.grad or b.grad
    elif len(a.shape) == 2:
        rhs, shape, grad = f"{a.name} @ {a.name}.t()", (a.shape[0], a.shape[0]), a.grad
    else:
        return None
    return rhs, Entry(name, shape, grad, obj=name)


def op_reduce(p: Program, a: Entry, variant: int, name: str):
    text, dim = REDUCE[variant % len(REDUCE)]
    if dim is not None and not a.shape:
        text, dim = REDUCE[0]
    shape = () if dim is None else a.shape[:dim % len(a.shape)] + a.shape[dim % len(a.shape) + 1:]
    return text.format(a.name), Entry(name, shape, a.grad, obj=name)


def _views(a: Entry) -> list[tuple[str, tuple, dict]]:
    """The view ops that apply to ``a``: (source, shape, flags)."""
    out, s, n = [], a.shape, a.name
    if len(s) == 2:
        out.append((f"{n}.t()", (s[1], s[0]), {"contiguous": False}))
        out.append((f"{n}.reshape(-1)", (f"{s[0]}*{s[1]}",), {}))
        out.append((f"{n}[0]", (s[1],), {}))
        out.append((f"{n}[:, 0]", (s[0],), {"contiguous": False}))
        if a.contiguous:
            out.append((f"{n}.view({s[1]}, {s[0]})", (s[1], s[0]), {}))
        if s[1] == "N":
            out.append((f"{n}[:, :H]", (s[0], "H"), {"contiguous": False}))
    if len(s) == 1 and "*" in s[0]:
        first, rest = s[0].split("*", 1)
        out.append((f"{n}.reshape({first}, {rest})", (first, rest), {}))
    if len(s) == 1:
        out.append((f"{n}.expand(M, {s[0]})", ("M", s[0]), {"contiguous": False, "overlap": True}))
    if not s:
        out.append((f"{n}.expand(M, N)", ("M", "N"), {"contiguous": False, "overlap": True}))
    return out


def op_view(p: Program, a: Entry, variant: int, name: str):
    views = [v for v in _views(a) if fits(v[1])]
    if not views:
        return None
    text, shape, flags = views[variant % len(views)]
    contiguous = flags.get("contiguous", a.contiguous)
    entry = Entry(name, shape, a.grad, obj=name, contiguous=contiguous,
                  overlap=flags.get("overlap", a.overlap), leaf_view=a.leaf or a.leaf_view)
    return text, entry


def _writable(e: Entry) -> bool:
    return e.grad and not e.leaf and not e.leaf_view and not e.overlap


def op_inplace(p: Program, a: Entry, variant: int, name: str):
    targets = [e for e in p.pool if _writable(e)]
    if not targets:
        return None
    t = targets[(p.pool.index(a)) % len(targets)]
    kind, rest = variant % 3, variant // 3
    if kind == 0:
        return f"{t.name}.relu_()", replace(t, name=name)
    b = _operand(p, t, rest)
    return f"{t.name}.{'add_' if kind == 1 else 'mul_'}({b.name})", replace(t, name=name)


def retain(p: Program, a: Entry, variant: int) -> None:
    targets = [e for e in p.pool if e.grad and not e.leaf]
    if targets:
        t = targets[(p.pool.index(a)) % len(targets)]
        p.lines.append(f"{t.name}.retain_grad()")
        if t.obj not in p.retained:
            p.retained.append(t.obj)


OPS = {"unary": op_unary, "add": op_binary("+"), "mul": op_binary("*"), "matmul": op_matmul,
       "reduce": op_reduce, "view": op_view, "inplace": op_inplace}


def build(leaf_shapes: list[int], with_input: bool, specs: list[tuple[str, int, int]], backwards: int) -> Program:
    """The program for these specs; ops that do not apply to the tensor they pick are left out."""
    p = Program(backwards=backwards)
    for i, k in enumerate(leaf_shapes):
        shape = LEAF_SHAPES[k % len(LEAF_SHAPES)]
        p.add(f"torch.randn({', '.join(shape)}, requires_grad=True)", Entry(f"t{i}", shape, True, leaf=True, obj=f"t{i}"))
        p.leaves.append(f"t{i}")
    if with_input:
        p.add("torch.randn(M, N)", Entry(f"t{len(p.pool)}", ("M", "N"), False, obj=f"t{len(p.pool)}"))
    for kind, pick, variant in specs:
        a = p.pool[pick % len(p.pool)]
        if kind == "retain":
            retain(p, a, variant)
            continue
        name = f"t{len(p.pool)}"
        made = OPS[kind](p, a, variant, name)
        if made is not None and fits(made[1].shape):
            p.add(*made)
    last = [e for e in p.pool if e.grad][-1]
    p.lines.append(f"loss = {last.name}.sum()")
    if backwards == 2:
        p.lines.append("loss.backward(retain_graph=True)")
    p.lines.append("loss.backward()")
    return p
