"""Memory by ``nn.Module`` and by source line: who made each storage, in the user's terms.

Capture emits ``module_enter`` / ``module_exit`` around each module's forward and a
``source`` event whenever the user's file:line behind the ops changes. Here those become,
for each storage:

- ``module``: the innermost module running when the op that made it ran (a forward op,
  or a forward op recomputed in backward). A gradient made in backward gets the module of
  the forward op whose node produced it (the module running when that node was made).
  Parameters and buffers get the module that owns them, read from their name. Empty where
  no module was running (inputs, code outside any module).
- ``source``: the ``file:line`` of the user's frame behind that op (for a gradient: behind
  the forward op of its node).

``modules_table`` aggregates them: one row per module. Imports no torch.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .tables import each_row, known, pairs

from .timeline import live_at
from .training_steps import Described, most_at_once

MODULE_COLUMNS = ["module", "type", "parent", "depth", "calls", "parameter_bytes", "activation_bytes",
                  "activation_bytes_total", "gradient_bytes", "peak_live_bytes", "peak_live_bytes_total",
                  "step_activation_bytes", "step_activation_bytes_total"]
HELD = ("parameter", "buffer")   # name sources whose owner module is in the name


class Timeline:
    """A value that changes at known event seqs (the running module, the source line)."""

    def __init__(self, seqs: list[int], values: list[str]):
        self.seqs = np.asarray(seqs, dtype="int64")
        self.values = values

    def at(self, seq) -> str:
        i = int(np.searchsorted(self.seqs, seq, side="right")) - 1
        return self.values[i] if i >= 0 else ""

    def at_many(self, seqs) -> list[str]:
        idx = np.searchsorted(self.seqs, np.asarray(seqs, dtype="int64"), side="right") - 1
        return [self.values[i] if i >= 0 else "" for i in idx]


def module_events(tables: dict) -> pd.DataFrame:
    """Enter and exit events in seq order: columns seq, t_ns, enter (bool), module."""
    enter = tables["module_enter"].assign(enter=True)
    exit_ = tables["module_exit"].assign(enter=False)
    both = pd.concat([enter[["seq", "t_ns", "enter", "module"]], exit_[["seq", "t_ns", "enter", "module"]]])
    return both.sort_values("seq").reset_index(drop=True)


def running_module(tables: dict) -> Timeline:
    """The innermost module running after each enter or exit."""
    stack: list[str] = []
    seqs, values = [], []
    for seq, enter, path in zip(*(module_events(tables)[c].tolist() for c in ("seq", "enter", "module"))):
        if enter:
            stack.append(path)
        elif path in stack:
            while stack.pop() != path:
                pass
        seqs.append(seq)
        values.append(stack[-1] if stack else "")
    return Timeline(seqs, values)


def running_source(tables: dict) -> Timeline:
    src = tables["source"]
    values = [f"{f}:{int(ln)}" if isinstance(f, str) and known(ln) else "" for f, ln in each_row(src, "file", "line")]
    return Timeline(src["seq"].tolist(), values)


def spans(tables: dict) -> list[dict]:
    """Each module call as {module, depth, t0_ns, t1_ns} (t1 None: still running at the end)."""
    out, stack = [], []
    ev = module_events(tables)
    for t, enter, path in each_row(ev, "t_ns", "enter", "module"):
        if enter:
            stack.append({"module": path, "depth": len(stack), "t0_ns": int(t), "t1_ns": None})
            out.append(stack[-1])
        elif any(s["module"] == path for s in stack):
            while stack:
                span = stack.pop()
                span["t1_ns"] = int(t)
                if span["module"] == path:
                    break
    return out


def owner(name: str) -> str:
    """`model.0.weight` -> `model.0`: the module that holds a parameter or buffer."""
    return name.rsplit(".", 1)[0] if "." in name else ""


def node_origins(tables: dict, modules: Timeline | None = None,
                 sources: Timeline | None = None) -> tuple[dict[int, str], dict[int, str]]:
    """({node: module}, {node: source}): where the forward op that made each node ran."""
    modules = modules or running_module(tables)
    sources = sources or running_source(tables)
    nodes = tables["node"].drop_duplicates("node")
    ids = nodes["node"].astype(int).tolist()
    return dict(zip(ids, modules.at_many(nodes["seq"]))), dict(zip(ids, sources.at_many(nodes["seq"])))


def storage_origins(tables: dict) -> tuple[dict[int, str], dict[int, str]]:
    """({storage: module}, {storage: source}) for every storage, by the rules above."""
    modules, sources = running_module(tables), running_source(tables)
    alloc = tables["alloc"].drop_duplicates("storage")
    steps = tables["step"]
    backward_node = {int(s): n for s, n, p in zip(*(steps[c].tolist() for c in ("step", "node", "phase")))
                     if p == "backward" and known(n)}
    node_module, node_source = node_origins(tables, modules, sources)
    held = held_by(tables)
    mod_at, src_at = modules.at_many(alloc["seq"]), sources.at_many(alloc["seq"])
    mod, src = {}, {}
    for i, (sid, step, pre, rec) in enumerate(zip(alloc["storage"].astype(int).tolist(), alloc["step"].tolist(),
                                                  alloc["preexisting"].tolist(), alloc["recompute"].tolist())):
        node = backward_node.get(int(step))
        if sid in held:   # a parameter or buffer belongs to its module, wherever it was made
            mod[sid], src[sid] = held[sid], "" if pre else src_at[i]
        elif pre:
            mod[sid], src[sid] = "", ""
        elif node is not None and not rec:
            mod[sid], src[sid] = node_module.get(int(node), ""), node_source.get(int(node), "")
        else:
            mod[sid], src[sid] = mod_at[i], src_at[i]
    return mod, src


def held_by(tables: dict) -> dict[int, str]:
    """{storage: owner module} for parameters and buffers named after their module."""
    names = tables["name"]
    names = names[names["source"].isin(list(HELD))].drop_duplicates("storage")
    return {int(s): owner(n) for s, n in each_row(names, "storage", "name")}


def module_outputs(tables: dict) -> set[tuple[int, str]]:
    """{(storage, module)}: storages a module's forward returned."""
    ex = tables["module_exit"]
    return {(int(s), m) for m, outs in each_row(ex, "module", "outputs") for s in (outs or ())}


# -- one row per module -----------------------------------------------------------------------
def module_list(tables: dict) -> pd.DataFrame:
    m = tables["module"].drop_duplicates("module")
    calls = tables["module_enter"]["module"].value_counts()
    paths = m["module"].tolist()
    return pd.DataFrame({
        "module": paths, "type": m["type"].tolist(),
        "parent": [_parent(p, set(paths)) for p in paths],
        "depth": [p.count(".") for p in paths],
        "calls": [int(calls.get(p, 0)) for p in paths],
    })


def _parent(path: str, known: set) -> str:
    while "." in path:
        path = path.rsplit(".", 1)[0]
        if path in known:
            return path
    return ""


def _own(t: pd.DataFrame, role: str | tuple) -> pd.Series:
    roles = (role,) if isinstance(role, str) else role
    sel = t[t["role"].isin(roles) & (t["module"] != "")]
    return sel.groupby("module")["nbytes"].sum()


def _subtree(paths: list[str], own: pd.Series) -> list[int]:
    """Bytes of each module and its descendants."""
    items = list(own.items())
    return [int(sum(b for m, b in items if m == p or m.startswith(p + "."))) for p in paths]


def modules_table(tables: dict, tensors: pd.DataFrame, peak_seq: int, described: Described,
                  calls: pd.Series) -> pd.DataFrame:
    """``step_activation_*``: the activations of the training step the answer speaks of
    (the peak's): with several steps, what was saved for one backward, not the run's sum."""
    table = module_list(tables)
    paths = table["module"].tolist()
    act, params = _own(tensors, "activation"), _own(tensors, ("parameter",))
    step_act = _own(tensors[calls == described.call], "activation")
    grads = _own(tensors, "gradient")
    live = live_at(tensors, peak_seq) if peak_seq >= 0 else tensors.iloc[0:0]
    at_peak = live[live["module"] != ""].groupby("module")["nbytes"].sum()
    table["parameter_bytes"] = [int(params.get(p, 0)) for p in paths]
    table["activation_bytes"] = [int(act.get(p, 0)) for p in paths]
    table["activation_bytes_total"] = _subtree(paths, act)
    table["gradient_bytes"] = [int(grads.get(p, 0)) for p in paths]
    table["peak_live_bytes"] = [int(at_peak.get(p, 0)) for p in paths]
    table["peak_live_bytes_total"] = _subtree(paths, at_peak)
    table["step_activation_bytes"] = [int(step_act.get(p, 0)) for p in paths]
    table["step_activation_bytes_total"] = _subtree(paths, step_act)
    return table.reindex(columns=MODULE_COLUMNS)


def empty_modules_table() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object if c in ("module", "type", "parent") else "int64")
                         for c in MODULE_COLUMNS})


# -- the facts the answer and the summary lead with ------------------------------------------
TOP_MODULES = 10
TOP_NAMES = 3


def modules_at_peak(table: pd.DataFrame, n: int = TOP_MODULES) -> list[dict]:
    """The modules whose own storages held the most at the peak (parameters included)."""
    top = table[table["peak_live_bytes"] > 0].sort_values(["peak_live_bytes", "module"], ascending=[False, True])
    return [{"module": m, "type": ty, "bytes": int(b)}
            for m, ty, b in zip(top["module"].head(n), top["type"].head(n), top["peak_live_bytes"].head(n))]


def activations_by_module(tensors: pd.DataFrame, table: pd.DataFrame, described: Described,
                          calls: pd.Series) -> dict | None:
    """The new bytes forward saved for backward in the training step the answer speaks of
    (the peak's), grouped by module, largest first; and the saves that cost nothing new.
    ``calls``: each storage's training step (``call_of_storages``). What checkpoint
    recomputes in backward is not forward's. None when no module ran."""
    if not len(table):
        return None
    step = described.call
    ours = tensors[(calls == step) | (tensors["role"] == "parameter") | (tensors["alloc_seq"] < 0)]
    act = ours[(ours["role"] == "activation") & (ours["alloc_seq"] >= 0) & ~ours["recomputed"].astype(bool)]
    if not len(act):
        return {"backward": step, "backward_calls": described.calls, "bytes": 0, "at_once_bytes": 0, "count": 0,
                "modules": [], "zero_cost": zero_cost_saves(ours)}
    return {"backward": step, "backward_calls": described.calls, "bytes": int(act["nbytes"].sum()),
            "at_once_bytes": most_at_once(act), "count": int(len(act)),
            "modules": _module_groups(act, table), "zero_cost": zero_cost_saves(ours)}


def _module_groups(act: pd.DataFrame, table: pd.DataFrame) -> list[dict]:
    """Each module's activations, biggest first: one sort of plain rows (a pandas sort per
    module cost a tenth of a second on a 100-layer MLP)."""
    types = pairs(table["module"], table["type"])
    rows = sorted(each_row(act, "nbytes", "alloc_seq", "module", "name", "source"), key=lambda r: (-r[0], r[1]))
    by_module: dict = {}
    for nbytes, _seq, module, name, source in rows:
        by_module.setdefault(module, []).append((name, nbytes, source))
    groups = [{"module": module, "type": types.get(module, ""), "bytes": int(sum(b for _, b, _ in g)),
               "count": len(g), "top": [{"name": str(n), "bytes": int(b), "source": s} for n, b, s in g[:TOP_NAMES]]}
              for module, g in by_module.items()]
    groups.sort(key=lambda x: (-x["bytes"], x["module"]))
    return groups


def zero_cost_saves(tensors: pd.DataFrame) -> dict:
    """{role: storages} saved for backward that were not new memory (parameters, inputs)."""
    saved = tensors[(tensors["saved_by"] != "") & (tensors["role"] != "activation")]
    return {str(r): int(n) for r, n in saved["role"].value_counts().sort_index().items()}
