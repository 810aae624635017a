"""One row per storage: what it is, who made it, who saved and used it, when it was freed,
and its role. Roles are set by named passes, in order, like torch's memory profiler.
"""
from __future__ import annotations

import bisect

import pandas as pd

from ..roles import Role
from .tables import each_row, joined, text, known, pairs
from .sharding import set_rank_roles
from .naming import storage_shapes
from .slots import Slots
from .words import made_at

TENSOR_COLUMNS = [
    "id", "name", "role", "device", "dtype", "shape", "nbytes", "created_by", "alloc_step",
    "free_step", "freed_after", "saved_by", "unpacked_by", "released_step", "value",
    "requires_grad", "is_leaf", "grad_of", "alloc_seq", "free_seq", "phase", "recomputed", "made_at", "collective",
    "module", "source", "op_name",
]


OUTSIDE_GRAPH = "(a node outside the loss's graph)"


def base_table(tables: dict[str, pd.DataFrame], step_phase: pd.Series, step_op: dict) -> pd.DataFrame:
    alloc = tables["alloc"].drop_duplicates("storage")
    t = pd.DataFrame({
        "id": alloc["storage"].astype(int).values,
        "device": alloc["device"].values,
        "dtype": alloc["dtype"].values,
        "shape": [shape_text(s) for s in alloc["shape"].tolist()],
        "nbytes": alloc["nbytes"].astype("int64").values,
        "created_by": ["(before capture)" if p else op for op, p in each_row(alloc, "op", "preexisting")],
        "alloc_step": [0 if p else int(s) for s, p in each_row(alloc, "step", "preexisting")],
        "alloc_seq": [-1 if p else int(q) for q, p in each_row(alloc, "seq", "preexisting")],
        "preexisting": alloc["preexisting"].astype(bool).values,
        "factory": alloc["factory"].astype(bool).values,
        "value": alloc["value"].values,
        "recomputed": alloc["recompute"].fillna(False).astype(bool).values,
        "grad_args": alloc["grad_args"].fillna(False).astype(bool).values,
    })
    free = tables["free"].drop_duplicates("storage").set_index("storage")
    t["free_step"] = t["id"].map(free["step"]).astype("Int64")
    t["free_seq"] = t["id"].map(free["seq"]).astype("Int64")
    t["freed_after"] = pd.Series([step_op.get(int(s), "") if known(s) else "" for s in t["free_step"].tolist()],
                                 index=t.index, dtype=object)
    t["phase"] = t["alloc_step"].map(step_phase).fillna("setup")
    wrapped = t["id"].isin(wrapped_scalars(tables))
    t.loc[wrapped, "created_by"] = PYTHON_NUMBER
    t["_wrapped"] = wrapped
    return t


PYTHON_NUMBER = "(a python number)"   # the 0.5 of 0.5 * x: torch made it a tensor for the op


def wrapped_scalars(tables: dict) -> set[int]:
    """Storages of the python numbers torch wrapped as tensors for an op and autograd saved.
    They are born where no hook looks (the argument parser, before the op's dispatch), so
    neither "(before capture)" nor the previous op made them."""
    names = tables["name"]
    return set(names.loc[names["source"] == "wrapped_scalar", "storage"].dropna().astype(int))


CALL_RETURNED = "() returned)"   # freed_after "(backward() returned)": the call, not a node, let it go


def call_returned(call: str) -> str:
    return f"({call}{CALL_RETURNED}"


def mark_call_frees(t: pd.DataFrame, tables: dict) -> pd.DataFrame:
    """A gradient the engine made itself (the ``ones_like`` backward starts from) is held
    by the ``backward()`` call, not by a node: it goes when the call returns, after the
    last node ran. Saying "after AccumulateGrad" there would name the wrong cause."""
    steps, ends, begins = tables["step"], tables["backward_end"], tables["backward_begin"]
    engine = set(steps.loc[(steps["phase"] == "backward") & steps["node"].isna(), "step"].astype(int))
    node_ends = sorted(tables["node_end"]["seq"].tolist())
    calls = pairs(begins["index"], begins["call"])
    made = t["alloc_step"].isin(engine) & t["free_seq"].notna()   # the few the engine made, freed
    if not made.any():
        return t
    free_seq = t.loc[made, "free_seq"].astype("int64")
    for index, end in each_row(ends, "index", "seq"):
        ended = bisect.bisect_left(node_ends, end)   # node ends before this call's end
        after = node_ends[ended - 1] if ended else -1
        hit = free_seq.index[(free_seq > after) & (free_seq < end)]
        t.loc[hit, "freed_after"] = call_returned(calls.get(index) or "backward")
    return t


def add_saved(t: pd.DataFrame, slots: Slots, node_name: dict[int, str]) -> pd.DataFrame:
    saved = slots.saved
    owners = [slots.owner.get(p, OUTSIDE_GRAPH) for p in saved["pack"].tolist()]
    by = joined(list(saved["storage"]) + list(slots.hidden["storage"]), owners + list(slots.hidden["owner"]))
    t["saved_by"] = [by.get(i, "") for i in t["id"].tolist()]
    unp = slots.unpacked
    users = [node_name.get(int(n), "") if known(n) else "(outside backward)" for n in unp["node"].tolist()]
    used = joined(unp["storage"].tolist(), users)
    t["unpacked_by"] = [used.get(i, "") for i in t["id"].tolist()]
    t["released_step"] = t["id"].map(slots.released.groupby("storage")["step"].max()).astype("Int64")
    return t


def add_tensor_facts(t: pd.DataFrame, tables: dict) -> pd.DataFrame:
    facts = tables["tensor"]
    leaves = set(facts.loc[facts["leaf"] == True, "storage"].astype(int))  # noqa: E712
    grads = set(facts["storage"].astype(int))
    t["requires_grad"] = t["id"].isin(grads)
    t["is_leaf"] = ~t["id"].isin(grads - leaves)
    grad_of = {}
    for frame in (tables["leaf_grad"], tables["retained"]):
        grad_of.update({int(g): int(tg) for tg, g in each_row(frame, "target", "grad") if known(g)})
    t["grad_of"] = t["id"].map(grad_of).astype("Int64")
    t["_leaf_param"] = t["id"].isin(leaves)
    t["_param_grad"] = t["id"].isin(set(tables["leaf_grad"]["grad"].dropna().astype(int)))
    t["_retained"] = t["id"].isin(set(tables["retained"]["grad"].dropna().astype(int)))
    t["value"] = _landed_values(t, tables)
    return t


def _landed_values(t: pd.DataFrame, tables: dict) -> list:
    """A small .grad's value as it last landed (accumulation changes it in place); other
    storages keep their value as created."""
    landed = pd.concat([tables["leaf_grad"], tables["retained"]]).sort_values("seq")
    landed = landed[landed["grad"].notna() & landed["value"].notna()]
    last = pairs(landed["grad"].astype(int), landed["value"])
    return [last.get(i, v) for i, v in each_row(t, "id", "value")]


def _handed_on(tables: dict) -> set[int]:
    """Gradients that left the node that made them (or reached a tensor hook)."""
    ids = {int(g) for gs in tables["node_end"]["grads_out"] for g in (gs or []) if g is not None}
    ids |= set(tables["grad"]["grad"].dropna().astype(int))
    return ids


# -- the role passes ------------------------------------------------------------------------
def set_roles(t: pd.DataFrame, tables: dict) -> pd.DataFrame:
    role = pd.Series(Role.INTERMEDIATE.value, index=t.index)
    backward = t["phase"] == "backward"
    same_step = t["free_step"].notna() & (t["free_step"] == t["alloc_step"])
    saved = t["saved_by"] != ""
    handed = t["id"].isin(_handed_on(tables))
    # gradients and temporaries: everything backward creates
    role[backward] = Role.GRADIENT.value
    role[backward & same_step & ~handed] = Role.TEMPORARY.value
    # forward scratch that died in the op that made it
    role[~backward & same_step & ~saved] = Role.TEMPORARY.value
    # inputs: no grad, made before the forward pass or by a factory op
    inputs = (~backward & ~t["requires_grad"] & ~t["grad_args"] & ~t["_wrapped"]
              & (t["preexisting"] | (t["phase"] == "setup") | t["factory"]))
    role[inputs] = Role.INPUT.value
    # parameters: leaves that require grad
    role[t["_leaf_param"]] = Role.PARAMETER.value
    # activations: made in forward and saved for backward (a saved input stays an input)
    role[~backward & saved & ~inputs & ~t["_leaf_param"]] = Role.ACTIVATION.value
    # forward ops recomputed in backward (checkpoint): kept ones are activations again
    recomputed = t["recomputed"]
    role[recomputed] = Role.ACTIVATION.value
    role[recomputed & same_step] = Role.TEMPORARY.value
    # .grad of leaves and retained grads of non-leaves
    role[t["_param_grad"]] = Role.PARAM_GRAD.value
    role[t["_retained"]] = Role.RETAINED_GRAD.value
    # what modules and optimizers hold, by the names the program gives them
    names = tables["name"]
    for source, held_role in (("buffer", Role.BUFFER), ("optimizer_state", Role.OPTIMIZER_STATE)):
        held = set(names.loc[names["source"] == source, "storage"].dropna().tolist())
        role[[i in held for i in t["id"].tolist()]] = held_role.value
    t["role"] = role
    return t


def shape_text(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def tensors_table(tables: dict, step_phase: pd.Series, step_op: dict, node_name: dict,
                  names: dict[int, str], slots: Slots, origins: dict[str, dict] | None = None) -> pd.DataFrame:
    """``origins``: {column: {storage: value}} for module, source and op_name."""
    t = base_table(tables, step_phase, step_op)
    t = mark_call_frees(t, tables)
    known = storage_shapes(tables)
    t["shape"] = [shape_text(known[i]) if i in known else s for i, s in each_row(t, "id", "shape")]
    t = add_saved(t, slots, node_name)
    t = add_tensor_facts(t, tables)
    t = set_roles(t, tables)
    t = set_rank_roles(t, tables)
    t["name"] = t["id"].map(names)
    for column in ("module", "source", "op_name"):
        t[column] = text(t["id"].map((origins or {}).get(column, {})))   # all missing: float NaNs
    t["made_at"] = made_at(t, tables)
    return t[TENSOR_COLUMNS].reset_index(drop=True)
