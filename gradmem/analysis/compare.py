"""Two runs side by side: what one kept that the other did not, and where memory differs.

``compare(a, b, labels)`` takes two analyses (typically the same scenario with
``retain_grad`` off and on) and returns a ``Comparison``: plain DataFrames and numbers that
the CSV, the page and the terminal only format. Imports no torch.

Matching storages across runs (documented in docs/reports.md):

1. storages with the same ``(name, created_by, shape, dtype)`` pair up in allocation
   order: the k-th such storage of run A with the k-th of run B;
2. the storages left over pair up by ``(created_by, shape, dtype, role)``, again in
   allocation order (a name made from an op counter, ``mul#3``, can shift by one when the
   other run made an extra storage with the same op);
3. what is still left exists in one run only: for ``retain_grad`` off vs on, the retained
   copies (``error.grad``).

Steps are aligned by their ``(phase, op)`` labels: identical sequences pair step for step;
otherwise ``difflib`` pairs the longest common runs and every other step stands alone on
its own row (the other run's line stays flat there).
"""
from __future__ import annotations

from dataclasses import dataclass
from difflib import SequenceMatcher

import pandas as pd

from ..roles import ROLE_ORDER
from .timeline import live_at
from .tables import each_row, pairs

KEYS = (["name", "created_by", "shape", "dtype"], ["created_by", "shape", "dtype", "role"])
EXTRA_COLUMNS = ["only_in", "id", "name", "role", "shape", "dtype", "nbytes", "created_by", "alloc_step",
                 "free_step", "freed_after", "lifetime_steps", "outlives_backward", "grad_of", "value"]
TOP_STEPS = 5


@dataclass
class Comparison:
    labels: tuple[str, str]
    a: object                  # Analysis of the first run
    b: object                  # Analysis of the second run
    matches: pd.DataFrame      # a_id, b_id: the same storage in both runs
    extra: pd.DataFrame        # storages in one run only (EXTRA_COLUMNS)
    moved: pd.DataFrame        # storages in both runs whose lifetime or role differs
    roles: pd.DataFrame        # role, peak_a, peak_b, peak_diff, end_a, end_b, end_diff (+ a total row)
    aligned: pd.DataFrame      # one row per aligned step: a_step, b_step, ops, live and highest bytes, diff
    differ_most: pd.DataFrame  # the aligned rows with the largest |diff|
    headline: dict             # the numbers the plain answer is made of


def compare(a, b, labels: tuple[str, str] = ("a", "b")) -> Comparison:
    matches = match_storages(a.tensors, b.tensors)
    extra = pd.concat([only_in(a, set(matches["a_id"]), labels[0]),
                       only_in(b, set(matches["b_id"]), labels[1])], ignore_index=True)
    aligned = align_steps(a.steps, b.steps)
    differ = differ_most(aligned)
    roles = role_table(a, b)
    moved = moved_storages(a.tensors, b.tensors, matches)
    return Comparison(tuple(labels), a, b, matches, extra, moved, roles, aligned, differ,
                      headline(a, b, labels, extra, aligned))


# -- storages -------------------------------------------------------------------------------
def _in_order(tensors: pd.DataFrame) -> pd.DataFrame:
    return tensors.sort_values(["alloc_seq", "id"], kind="stable")


def _pair(a: pd.DataFrame, b: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The k-th storage of each key in A with the k-th of the same key in B."""
    ka = a.assign(_k=a.groupby(keys, sort=False).cumcount())[keys + ["_k", "id"]]
    kb = b.assign(_k=b.groupby(keys, sort=False).cumcount())[keys + ["_k", "id"]]
    both = ka.merge(kb, on=keys + ["_k"], suffixes=("_a", "_b"))
    return pd.DataFrame({"a_id": both["id_a"].astype(int), "b_id": both["id_b"].astype(int)})


def match_storages(ta: pd.DataFrame, tb: pd.DataFrame) -> pd.DataFrame:
    """Pairs (a_id, b_id) of the same storage in both runs, by the rule in the docstring."""
    a, b, found = _in_order(ta), _in_order(tb), []
    for keys in KEYS:
        pairs = _pair(a, b, keys)
        found.append(pairs)
        a, b = a[~a["id"].isin(pairs["a_id"])], b[~b["id"].isin(pairs["b_id"])]
    return pd.concat(found, ignore_index=True).sort_values("b_id", ignore_index=True)


def only_in(analysis, matched: set, label: str) -> pd.DataFrame:
    """The storages of one run that the other run does not have, with their lifetimes."""
    t = _in_order(analysis.tensors)
    t = t[~t["id"].isin(matched)]
    last = int(analysis.steps["step"].max()) if len(analysis.steps) else 0
    end = int(end_of_backward(analysis.steps)["step"]) if len(analysis.steps) else 0
    names = pairs(analysis.tensors["id"], analysis.tensors["name"])
    out = pd.DataFrame({
        "only_in": label, "id": t["id"].astype(int), "name": t["name"], "role": t["role"],
        "shape": t["shape"], "dtype": t["dtype"], "nbytes": t["nbytes"].astype("int64"),
        "created_by": t["created_by"], "alloc_step": t["alloc_step"].astype(int),
        "free_step": t["free_step"], "freed_after": t["freed_after"],
        "lifetime_steps": (t["free_step"].fillna(last + 1) - t["alloc_step"]).astype(int),
        "outlives_backward": (t["free_step"].isna() | (t["free_step"] > end)).astype(bool),
        "grad_of": t["grad_of"].map(lambda g: names.get(int(g), "") if pd.notna(g) else ""),
        "value": t["value"].where(t["value"].notna(), ""),
    })
    return out[EXTRA_COLUMNS].reset_index(drop=True)


def moved_storages(ta: pd.DataFrame, tb: pd.DataFrame, matches: pd.DataFrame) -> pd.DataFrame:
    """Matched storages allocated or freed at another step, or given another role, in B;
    largest first. ``free_*`` is empty where the storage outlived the capture."""
    cols = ["id", "name", "role", "nbytes", "alloc_step", "free_step", "freed_after"]
    both = matches.merge(ta[cols].add_suffix("_a"), left_on="a_id", right_on="id_a")
    both = both.merge(tb[cols].add_suffix("_b"), left_on="b_id", right_on="id_b")
    differs = ((both["alloc_step_a"] != both["alloc_step_b"]) | (both["role_a"] != both["role_b"])
               | (both["free_step_a"].fillna(-1) != both["free_step_b"].fillna(-1)))
    out = both[differs].sort_values(["nbytes_b", "b_id"], ascending=[False, True])
    out = out.rename(columns={"name_b": "name", "nbytes_b": "nbytes"})
    return out[["a_id", "b_id", "name", "nbytes", "role_a", "role_b", "alloc_step_a", "alloc_step_b",
                "free_step_a", "free_step_b", "freed_after_a", "freed_after_b"]].reset_index(drop=True)


# -- roles ----------------------------------------------------------------------------------
def end_of_backward(steps: pd.DataFrame) -> pd.Series:
    """The steps row after the last backward step (the last step if no backward ran)."""
    bw = steps[steps["phase"] == "backward"]
    return (bw if len(bw) else steps).iloc[-1]


def role_table(a, b) -> pd.DataFrame:
    """Bytes by role at each run's peak and at the end of its backward pass."""
    ea, eb = end_of_backward(a.steps), end_of_backward(b.steps)
    pa, pb = a.summary.tracked_peak_by_role, b.summary.tracked_peak_by_role   # the tracked timeline's
    rows = []
    for role in ROLE_ORDER:
        row = {"role": role, "peak_a": int(pa.get(role, 0)), "peak_b": int(pb.get(role, 0)),
               "end_a": int(ea.get(f"live_{role}", 0)), "end_b": int(eb.get(f"live_{role}", 0))}
        if any(row[k] for k in ("peak_a", "peak_b", "end_a", "end_b")):
            rows.append(row)
    rows.append({"role": "total", "peak_a": a.summary.tracked_peak_bytes, "peak_b": b.summary.tracked_peak_bytes,
                 "end_a": int(ea["live_bytes"]), "end_b": int(eb["live_bytes"])})
    t = pd.DataFrame(rows)
    t.insert(3, "peak_diff", t["peak_b"] - t["peak_a"])
    t["end_diff"] = t["end_b"] - t["end_a"]
    return t


# -- steps ----------------------------------------------------------------------------------
def _labels(steps: pd.DataFrame) -> list[str]:
    return [f"{p}:{o}" for p, o in each_row(steps, "phase", "op")]


def step_pairs(la: list[str], lb: list[str]) -> list[tuple]:
    """(index in A or None, index in B or None) per aligned row."""
    if la == lb:
        return [(i, i) for i in range(len(la))]
    pairs: list[tuple] = []
    for tag, i1, i2, j1, j2 in SequenceMatcher(None, la, lb, autojunk=False).get_opcodes():
        if tag == "equal":
            pairs += list(zip(range(i1, i2), range(j1, j2)))
        else:
            pairs += [(i, None) for i in range(i1, i2)] + [(None, j) for j in range(j1, j2)]
    return pairs


def _side(steps: pd.DataFrame, idx: pd.Series, suffix: str) -> dict:
    """One run's columns on the aligned rows; where it has no step, its last level carries on."""
    pos = idx.ffill().fillna(0).astype(int).to_numpy()
    has = idx.notna().to_numpy()
    live = steps["live_bytes"].to_numpy()[pos]
    hi = steps["peak_bytes"].to_numpy()[pos]
    return {
        f"step_{suffix}": pd.array([int(s) if h else None for s, h in zip(steps["step"].to_numpy()[pos], has)], dtype="Int64"),
        f"op_{suffix}": [str(o) if h else "" for o, h in zip(steps["op"].to_numpy()[pos], has)],
        f"phase_{suffix}": [str(p) if h else "" for p, h in zip(steps["phase"].to_numpy()[pos], has)],
        f"live_{suffix}": live, f"hi_{suffix}": [int(x) if h else int(v) for x, v, h in zip(hi, live, has)],
        f"pos_{suffix}": pos,
    }


def align_steps(sa: pd.DataFrame, sb: pd.DataFrame) -> pd.DataFrame:
    pairs = step_pairs(_labels(sa), _labels(sb))
    ia = pd.Series([p[0] for p in pairs], dtype="float64")
    ib = pd.Series([p[1] for p in pairs], dtype="float64")
    out = pd.DataFrame({"row": range(len(pairs)), **_side(sa, ia, "a"), **_side(sb, ib, "b")})
    out["diff"] = out["live_b"] - out["live_a"]
    out["change"] = out["diff"].diff().fillna(out["diff"]).astype("int64")
    return out


def differ_most(aligned: pd.DataFrame, n: int = TOP_STEPS) -> pd.DataFrame:
    """The aligned rows where live bytes differ most (largest |diff| first, then earliest)."""
    nonzero = aligned[aligned["diff"] != 0]
    order = nonzero.assign(_abs=nonzero["diff"].abs()).sort_values(["_abs", "row"], ascending=[False, True])
    return order.drop(columns="_abs").head(n).reset_index(drop=True)


# -- the headline -----------------------------------------------------------------------------
def _row_of(aligned: pd.DataFrame, side: str, step: int) -> int:
    hit = aligned.index[aligned[f"step_{side}"] == step]
    return int(aligned.at[hit[0], "row"]) if len(hit) else -1


def _extras_live(analysis, extra: pd.DataFrame, label: str, seq: int) -> pd.DataFrame:
    ids = set(extra.loc[extra["only_in"] == label, "id"])
    live = live_at(analysis.tensors, seq)
    return live[live["id"].isin(ids)].sort_values(["nbytes", "id"], ascending=[False, True])


def kept_rows(a, kept: pd.DataFrame) -> list[dict]:
    """Each storage B kept past backward; for a retained gradient, what became of the
    gradient that flowed through that tensor in A (``grad(error)``): when A freed it."""
    ta = a.tensors.set_index("name")
    rows = []
    for r in kept.itertuples():
        flow = f"grad({r.grad_of})" if r.grad_of else ""
        hit = ta.loc[[flow]] if flow in ta.index else None
        free = hit["free_step"].iloc[0] if hit is not None and len(hit) == 1 else pd.NA
        consumer = a.consumers.get(int(hit["id"].iloc[0])) if hit is not None else None
        rows.append({"name": r.name, "role": r.role, "nbytes": int(r.nbytes), "alloc_step": int(r.alloc_step),
                     "free_step": None if pd.isna(r.free_step) else int(r.free_step), "grad_of": r.grad_of,
                     "flow": flow if hit is not None else "", "flow_free_step": None if pd.isna(free) else int(free),
                     "flow_freed_after": str(hit["freed_after"].iloc[0]) if hit is not None and pd.notna(free) else "",
                     "flow_made_by": str(hit["created_by"].iloc[0]) if hit is not None else "",
                     "consumer": consumer.name if consumer else "", "consumer_step": consumer.step if consumer else None})
    return rows


def headline(a, b, labels, extra: pd.DataFrame, aligned: pd.DataFrame) -> dict:
    pa, sa, pb, sb = a.peak.bytes, a.peak.step, b.peak.bytes, b.peak.step
    ea, eb = end_of_backward(a.steps), end_of_backward(b.steps)
    only_b = extra[extra["only_in"] == labels[1]]
    only_a = extra[extra["only_in"] == labels[0]]
    kept = only_b[only_b["outlives_backward"]]
    at_peak = _extras_live(b, extra, labels[1], b.peak.seq)
    return {
        "labels": list(labels),
        "peak_a": pa, "peak_step_a": sa, "peak_op_a": a.peak.op, "peak_row_a": _row_of(aligned, "a", sa),
        "peak_b": pb, "peak_step_b": sb, "peak_op_b": b.peak.op, "peak_row_b": _row_of(aligned, "b", sb),
        "peak_diff": pb - pa,
        "end_a": int(ea["live_bytes"]), "end_b": int(eb["live_bytes"]),
        "end_step_a": int(ea["step"]), "end_step_b": int(eb["step"]),
        "end_diff": int(eb["live_bytes"]) - int(ea["live_bytes"]),
        "only_b_count": int(len(only_b)), "only_b_bytes": int(only_b["nbytes"].sum()),
        "only_a_count": int(len(only_a)), "only_a_bytes": int(only_a["nbytes"].sum()),
        "kept_count": int(len(kept)), "kept_bytes": int(kept["nbytes"].sum()),
        "kept_roles": sorted(set(kept["role"])), "kept": kept_rows(a, kept),
        "extra_at_peak_b": [{"name": r.name, "role": r.role, "nbytes": int(r.nbytes)} for r in at_peak.itertuples()],
        "extra_at_peak_b_bytes": int(at_peak["nbytes"].sum()),
        "unmatched_steps_a": int(aligned["step_b"].isna().sum()), "unmatched_steps_b": int(aligned["step_a"].isna().sum()),
        "same_steps": bool(aligned["step_a"].notna().all() and aligned["step_b"].notna().all()),
    }
