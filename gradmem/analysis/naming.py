"""Names a user recognises, for backward nodes and for storages.

A storage is named, in order of preference, by a program variable (``error``), a module
parameter (``model.0.weight``), a ``.grad`` (``w.grad``), the tensor its gradient is for
(``grad(error)``), the module that made it (``layers.0.dropout1: mask``), or else the op
that made it (``relu#3``, always kept in tensors.csv's ``op_name``).
"""
from __future__ import annotations

import pandas as pd

from .tables import each_row, known, pairs


def node_names(nodes: pd.DataFrame, storage_names: dict[int, str] | None = None) -> dict[int, str]:
    """{node id: display name}; repeated names get '#k', AccumulateGrad names its leaf."""
    names: dict[int, str] = {}
    counts = nodes["name"].value_counts()
    seen: dict[str, int] = {}
    for nid, name, leaf in each_row(nodes, "node", "name", "leaf"):
        if name == "AccumulateGrad" and storage_names is not None and known(leaf):
            names[int(nid)] = f"AccumulateGrad({storage_names.get(int(leaf), f'S{int(leaf)}')})"
            continue
        seen[name] = seen.get(name, 0) + 1
        names[int(nid)] = f"{name}#{seen[name]}" if counts[name] > 1 else name
    return names


def variable_names(name_events: pd.DataFrame) -> dict[int, str]:
    """The first name each storage was given by the program."""
    first = name_events.sort_values("seq").drop_duplicates("storage")
    return pairs(first["storage"].astype(int), first["name"])


def node_outputs(tensor_events: pd.DataFrame) -> dict[tuple[int, int], int]:
    """{(node id, output_nr): storage} for every forward output with a grad_fn."""
    out = tensor_events.dropna(subset=["node"])
    return {(int(n), int(o)): int(s) for n, o, s in each_row(out, "node", "output_nr", "storage")}


def gradient_targets(tables: dict[str, pd.DataFrame]) -> dict[int, int]:
    """{gradient storage: storage of the tensor it is the gradient of}: the first evidence
    in event order wins (a gradient passed on as a view keeps its first name)."""
    evidence: list[tuple[int, int, int]] = []   # (seq, grad, target)
    outputs = node_outputs(tables["tensor"])
    nodes = tables["node"]
    next_of = pairs(nodes["node"].astype(int), nodes["next"]) if len(nodes) else {}
    leaf_of = {int(n): int(l) for n, l in each_row(nodes, "node", "leaf") if known(l)}
    ends = tables["node_end"]
    for seq, nid, grads_out in each_row(ends, "seq", "node", "grads_out"):
        for (target_node, nr), grad in zip(next_of.get(int(nid), []), grads_out or []):
            if grad is None or target_node is None:
                continue
            target = leaf_of.get(target_node, outputs.get((target_node, nr)))
            if target is not None:
                evidence.append((int(seq), int(grad), target))
    for frame in (tables["grad"], tables["leaf_grad"], tables["retained"]):
        for seq, target, grad in each_row(frame, "seq", "target", "grad"):
            if known(grad) and known(target):
                evidence.append((int(seq), int(grad), int(target)))
    targets: dict[int, int] = {}
    for _, grad, target in sorted(evidence):
        targets.setdefault(grad, target)
    return targets


def storage_shapes(tables: dict[str, pd.DataFrame]) -> dict[int, tuple]:
    """{storage: the shape the user knows it by}: where a storage is seen through several
    shapes (a matmul's 2-D result viewed back to 3-D, a bias gradient summed as (1, n) and
    handed on as (n,)), the shape of the program variable that names it, else of the .grad
    as it landed, else of the gradient as it arrived. Storages without either keep the
    shape they were made with."""
    shapes: dict[int, tuple] = {}
    for kind, key, first in (("grad", "grad", True), ("retained", "grad", False), ("leaf_grad", "grad", False),
                             ("name", "storage", True)):
        rows = tables[kind].dropna(subset=[key, "shape"]).sort_values("seq")
        rows = rows.drop_duplicates(key, keep="first" if first else "last")
        shapes.update({int(s): tuple(shape) for s, shape in zip(rows[key], rows["shape"].tolist())})
    return shapes



def op_names(tables: dict[str, pd.DataFrame]) -> dict[int, str]:
    """{storage: op name and count} (``relu#3``): kept beside the friendlier names."""
    counters: dict[str, int] = {}
    result: dict[int, str] = {}
    for sid, op in zip(tables["alloc"]["storage"].astype(int).tolist(), tables["alloc"]["op"].tolist()):
        counters[op or "tensor"] = counters.get(op or "tensor", 0) + 1
        result[sid] = f"{op or 'tensor'}#{counters[op or 'tensor']}"
    return result


def short_module(path: str) -> str:
    """``model.layers.0.dropout1`` -> ``layers.0.dropout1``: the root's variable is implied,
    unless what is left is a bare index (``model.1``, an ``nn.Sequential`` child)."""
    short = path.split(".", 1)[1] if "." in path else path
    return path if short[:1].isdigit() else short


def module_labels(tables: dict, modules: dict[int, str], outputs: set[tuple[int, str]]) -> dict[int, str]:
    """{storage: ``layers.0.dropout1: mask``} for storages an op made inside a module: what
    the module returned is its ``output``, a bool tensor a ``mask``, else the op's name;
    a label used again gets ``#2``, ``#3``, ... (the first keeps it plain)."""
    labels: dict[int, str] = {}
    alloc = tables["alloc"].drop_duplicates("storage")
    types = pairs(tables["module"]["module"], tables["module"]["type"])
    for sid, op, dtype, pre in zip(alloc["storage"].astype(int).tolist(),
                                   *(alloc[c].tolist() for c in ("op", "dtype", "preexisting"))):
        module = modules.get(sid, "")
        if not module or pre:
            continue
        labels[sid] = f"{short_module(module)}: {_what(sid, module, op, dtype, types, outputs)}"
    seen: dict[str, int] = {}
    for sid, label in labels.items():   # the first keeps the plain label: a later repeat (a
        seen[label] = seen.get(label, 0) + 1   # second call, a checkpoint's recompute) never renames it
        if seen[label] > 1:
            labels[sid] = f"{label}#{seen[label]}"
    return labels


MASK_OPS = frozenset({"empty_like", "bernoulli", "native_dropout"})


def _what(sid: int, module: str, op: str, dtype: str, types: dict, outputs: set) -> str:
    """What a storage is to its module: its output, a dropout mask, else the op's name
    (a dropout module fills its mask with ``bernoulli_`` in place, after ``empty_like``)."""
    if (sid, module) in outputs:
        return "output"
    if dtype == "bool" or (op in MASK_OPS and str(types.get(module, "")).endswith("Dropout")):
        return "mask"
    return op or "tensor"


def storage_names(tables: dict[str, pd.DataFrame], labels: dict[int, str] | None = None) -> dict[int, str]:
    """A program variable's name first, then a gradient's target, then the module label
    (``labels``), else the op name (``relu#3``)."""
    names = variable_names(tables["name"])
    targets = gradient_targets(tables)
    by_op = op_names(tables)
    labels = labels or {}
    result: dict[int, str] = {}
    for sid, op_name in by_op.items():
        if sid in names:
            result[sid] = names[sid]
        elif sid in targets and targets[sid] != sid:
            result[sid] = None   # filled below, once the target's name is known
        else:
            result[sid] = labels.get(sid, op_name)
    for sid, name in result.items():
        if name is None:
            target = targets[sid]
            result[sid] = f"grad({result.get(target) or f'S{target}'})"
    return result
