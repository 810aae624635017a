"""Ground truth: the allocator's record reconciled with the tracked storages, and RSS.

Every block the allocator handed out during the capture is matched with the tracked
storage that lives in it: same address, same size, and the latest block at that address
allocated before gradmem saw the storage (the allocator's clock is aligned with ours, see
``gradmem/capture/allocator.py``). Blocks no storage explains are the ``unattributed``
role: kernel workspaces and scratch tensors that never surface as an op's output.

Per step (after the step):
- ``allocator_bytes``: what the allocator holds for the program: its net allocations since
  the capture began, plus the storages alive before the capture (it could not see those
  allocated). On CUDA: ``torch.cuda.memory_allocated()``.
- ``live_unattributed``: bytes of unmatched blocks alive (CUDA: allocated minus tracked).
- the invariant ``live_bytes + live_unattributed == allocator_bytes``; it fails where a
  tracked storage was not made by this allocator (``torch.from_numpy``) or its lifetime
  disagrees with the allocator's.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .tables import text, pairs
from .headline import unattributed_by_node

TOP_BLOCKS = 10
MIN_SLACK_NS = 2_000       # how far a block may seem to come after its storage's alloc event
GROUND_COLUMNS = ["allocator_bytes", "allocator_peak_bytes", "reserved_bytes", "rss_bytes"]


def reconcile(tables: dict, steps: pd.DataFrame, tensors: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Steps with the ground-truth columns, and the summary's ``allocator`` and ``rss``."""
    out = steps.copy()
    for col in GROUND_COLUMNS:
        out[col] = pd.array([pd.NA] * len(out), dtype="Int64")
    cpu = tables["allocator"]
    cpu = cpu[cpu["step"] >= 0]
    if len(tables["device_memory"]):
        out, allocator = _cuda(out, tables["device_memory"], tensors)
    elif len(cpu):
        out, allocator = _cpu(out, cpu, tables, tensors)
    else:
        allocator = {"source": None}
    out, rss = _rss(out, tables["rss"])
    return out, {"allocator": allocator, "rss": rss}


# -- CPU: blocks matched with storages --------------------------------------------------
def blocks_table(ev: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(blocks allocated in the record with their free, events that count towards the net).

    An address's allocations and frees alternate; a free before any allocation at its
    address is of a block made before the capture, which the net leaves out."""
    ev = ev.sort_values(["t_ns", "seq"], kind="stable").reset_index(drop=True)
    is_alloc = ev["nbytes"] > 0
    ev["n"] = is_alloc.astype(int).groupby(ev["ptr"]).cumsum()
    counted = ev[is_alloc | (ev["n"] > 0)]
    allocs = ev[is_alloc][["ptr", "n", "nbytes", "t_ns", "step"]].rename(
        columns={"t_ns": "alloc_t", "step": "alloc_step"})
    frees = ev[~is_alloc & (ev["n"] > 0)][["ptr", "n", "t_ns", "step"]].rename(
        columns={"t_ns": "free_t", "step": "free_step"}).drop_duplicates(["ptr", "n"])
    blocks = allocs.merge(frees, on=["ptr", "n"], how="left")
    return blocks.reset_index(drop=True), counted


def match_blocks(blocks: pd.DataFrame, alloc: pd.DataFrame, slack_ns: int) -> pd.Series:
    """For each block, the storage id living in it (NA when none)."""
    st = alloc[~alloc["preexisting"].astype(bool) & alloc["ptr"].notna() & (alloc["nbytes"] > 0)]
    st = pd.DataFrame({"storage": st["storage"].astype("int64"), "ptr": st["ptr"].astype("int64"),
                       "size": st["nbytes"].astype("int64"), "t": st["t_ns"].astype("int64") + slack_ns})
    b = blocks.reset_index().rename(columns={"index": "block"})
    b = b.assign(ptr=b["ptr"].astype("int64"), alloc_t=b["alloc_t"].astype("int64"))
    m = pd.merge_asof(st.sort_values("t"), b.sort_values("alloc_t")[["block", "ptr", "alloc_t", "nbytes", "free_t"]],
                      left_on="t", right_on="alloc_t", by="ptr", direction="backward")
    ok = (m["nbytes"] == m["size"]) & (m["free_t"].isna() | (m["free_t"] >= m["t"] - 2 * slack_ns))
    m = m[ok.fillna(False)].drop_duplicates("block")
    living = pairs(m["block"].astype(int), m["storage"])
    return blocks.index.to_series().map(living).astype("Int64")


def on_storage_steps(blocks: pd.DataFrame, tensors: pd.DataFrame) -> pd.DataFrame:
    """A matched block is placed on the steps of its storage: where a block's allocation
    falls between two ops (``torch.tensor`` fills its data before ``lift_fresh`` runs), the
    op that made the storage owns it. A free moves only where both records saw one."""
    t = tensors.set_index("id")
    matched = blocks["storage"].notna()
    sid = blocks.loc[matched, "storage"].astype("int64")
    blocks = blocks.copy()
    blocks.loc[matched, "alloc_step"] = sid.map(t["alloc_step"]).to_numpy()
    freed = matched & blocks["free_step"].notna()
    ours = blocks.loc[freed, "storage"].astype("int64").map(t["free_step"])
    blocks.loc[freed, "free_step"] = ours.fillna(blocks.loc[freed, "free_step"]).to_numpy()
    return blocks


def _live(idx: pd.Series, blocks: pd.DataFrame) -> np.ndarray:
    """Bytes of ``blocks`` alive after each step."""
    freed = blocks[blocks["free_step"].notna()]
    return _by_step(idx, blocks["alloc_step"], blocks["nbytes"]) - _by_step(idx, freed["free_step"], freed["nbytes"])


def _by_step(index: pd.Series, step: pd.Series, amount: pd.Series) -> np.ndarray:
    """Running sum of ``amount`` over steps: the value after each step in ``index``."""
    per = amount.groupby(step).sum()
    return per.reindex(index).fillna(0).cumsum().to_numpy(dtype="int64")


def _cpu(out: pd.DataFrame, ev: pd.DataFrame, tables: dict, tensors: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    clock = tables["clock"]
    err = int(clock["error_ns"].iloc[-1]) if len(clock) and pd.notna(clock["error_ns"].iloc[-1]) else 0
    blocks, counted = blocks_table(ev)
    blocks["storage"] = match_blocks(blocks, tables["alloc"], max(MIN_SLACK_NS, 4 * err))
    blocks, counted, lost = lost_frees(blocks, counted, tables["free"])
    blocks = on_storage_steps(blocks, tensors)
    loose = blocks[blocks["storage"].isna()]
    idx = out["step"]
    unattributed = _live(idx, loose)
    pre = tensors[tensors["alloc_seq"] < 0]
    pre_live = pre["nbytes"].sum() - _by_step(idx, pre["free_step"].dropna(), pre.loc[pre["free_step"].notna(), "nbytes"])
    net = _live(idx, blocks)
    out["live_unattributed"] = unattributed
    out["allocator_bytes"] = pd.array(net + pre_live, dtype="Int64")
    out["allocator_peak_bytes"] = pd.array(_step_peaks(counted, idx, net, pre_live), dtype="Int64")
    summary = _allocator_summary(out, "cpu allocator (torch profiler, profile_memory)", err)
    summary["unattributed_at_peak"] = _loose_at_peak(counted, loose, summary["peak_step"])
    summary["unattributed_blocks"] = _top_blocks(loose, out)
    summary["unattributed_by_node"] = unattributed_by_node(loose, pairs(out["step"], out["op"]))
    summary["blocks"] = int(len(blocks))
    summary["blocks_matched"] = int(blocks["storage"].notna().sum())
    summary["peak_with_unattributed"] = _peak_with_unattributed(tables, tensors, blocks)
    summary["frees_from_storages"] = lost
    return out, summary


def lost_frees(blocks: pd.DataFrame, counted: pd.DataFrame, free: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """The profiler records allocations and frees only on threads it is enabled on: a block
    whose last owner lets go on another thread (gloo's worker threads release a collective's
    tensors) is never seen freed. Where the matched storage was freed, its free (the
    storage's weakref, which fires on any thread) stands in for the missing one."""
    free = free.drop_duplicates("storage").set_index("storage")
    lost = blocks["free_t"].isna() & blocks["storage"].notna() & blocks["storage"].isin(free.index)
    if not lost.any():
        return blocks, counted, 0
    blocks = blocks.copy()
    sid = blocks.loc[lost, "storage"].astype("int64")
    blocks.loc[lost, "free_t"] = sid.map(free["t_ns"]).to_numpy()
    blocks.loc[lost, "free_step"] = sid.map(free["step"]).to_numpy()
    extra = pd.DataFrame({"t_ns": blocks.loc[lost, "free_t"].astype("int64"), "seq": sid.map(free["seq"]).to_numpy(),
                          "step": blocks.loc[lost, "free_step"].astype("int64"), "ptr": blocks.loc[lost, "ptr"],
                          "nbytes": -blocks.loc[lost, "nbytes"]})
    counted = pd.concat([counted, extra], ignore_index=True).sort_values(["t_ns", "seq"], kind="stable")
    return blocks, counted.reset_index(drop=True), int(lost.sum())


def _step_peaks(counted: pd.DataFrame, idx: pd.Series, net: np.ndarray, pre_live: np.ndarray) -> np.ndarray:
    """Highest allocator total within each step (or at its start)."""
    running = counted["nbytes"].cumsum()
    within = running.groupby(counted["step"]).max().reindex(idx).to_numpy(dtype="float64")
    start = np.concatenate([[0], net[:-1]])
    best = np.fmax(within, np.maximum(start, net))
    return best.astype("int64") + pre_live


def _peak_with_unattributed(tables: dict, tensors: pd.DataFrame, blocks: pd.DataFrame) -> int:
    """gradmem's peak once unattributed blocks are counted, on one time line: every block
    at the allocator's times (a matched block is its storage's memory, taken early in the
    op and returned late), storages no block explains at the hooks' times."""
    alloc, free = tables["alloc"].drop_duplicates("storage"), tables["free"].drop_duplicates("storage")
    size = pairs(tensors["id"], tensors["nbytes"])
    matched = set(blocks["storage"].dropna().astype("int64"))
    pre = set(tensors.loc[tensors["alloc_seq"] < 0, "id"])
    new = alloc[~alloc["storage"].isin(matched | pre)]
    gone = free[~free["storage"].isin(matched)]
    freed = blocks[blocks["free_t"].notna()]
    t = pd.concat([new["t_ns"], gone["t_ns"], blocks["alloc_t"], freed["free_t"]], ignore_index=True)
    d = pd.concat([new["storage"].map(size), -gone["storage"].map(size).fillna(0),
                   blocks["nbytes"], -freed["nbytes"]], ignore_index=True)
    order = np.argsort(t.to_numpy(dtype="int64"), kind="stable")
    running = d.to_numpy(dtype="float64")[order].cumsum()
    base = int(tensors.loc[tensors["alloc_seq"] < 0, "nbytes"].sum())
    return int(base + max(running.max() if len(running) else 0, 0))


def _loose_at_peak(counted: pd.DataFrame, loose: pd.DataFrame, step: int) -> int:
    """Unattributed bytes alive at the instant of the allocator's peak (within its step)."""
    running = counted["nbytes"].cumsum()
    in_step = running[counted["step"] == step]
    if not len(in_step):
        return int(_live(pd.Series([step]), loose[loose["alloc_step"] <= step])[0])
    t = counted.at[in_step.idxmax(), "t_ns"]
    alive = (loose["alloc_t"] <= t) & (loose["free_t"].isna() | (loose["free_t"] > t))
    return int(loose.loc[alive, "nbytes"].sum())


def _top_blocks(loose: pd.DataFrame, steps: pd.DataFrame) -> list[dict]:
    op = pairs(steps["step"], steps["op"])
    top = loose.sort_values(["nbytes", "alloc_t"], ascending=[False, True]).head(TOP_BLOCKS)
    return [{"nbytes": int(r.nbytes), "step": int(r.alloc_step), "op": op.get(int(r.alloc_step), ""),
             "free_step": None if pd.isna(r.free_step) else int(r.free_step),
             "freed_after": "" if pd.isna(r.free_step) else op.get(int(r.free_step), "")}
            for r in top.itertuples()]


# -- CUDA: readings after every step ------------------------------------------------------
def _cuda(out: pd.DataFrame, dm: pd.DataFrame, tensors: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    idx = out["step"]
    last = dm.groupby("step").last()
    allocated = last["allocated"].reindex(idx).ffill()
    reserved = last["reserved"].reindex(idx).ffill()
    on_device = tensors[text(tensors["device"]).str.startswith("cuda")]
    tracked = (_by_step(idx, on_device["alloc_step"], on_device["nbytes"])
               - _by_step(idx, on_device["free_step"].dropna(), on_device.loc[on_device["free_step"].notna(), "nbytes"]))
    other = out["live_bytes"].to_numpy() - tracked     # tracked storages on other devices
    out["allocator_bytes"] = pd.array((allocated.to_numpy() + other).round(), dtype="Int64")
    out["allocator_peak_bytes"] = out["allocator_bytes"]
    out["reserved_bytes"] = pd.array(reserved.to_numpy().round(), dtype="Int64")
    out["live_unattributed"] = (allocated.fillna(0).to_numpy() - tracked).astype("int64")
    summary = _allocator_summary(out, "cuda caching allocator (memory_allocated)", 0)
    peak = out["reserved_bytes"].max()
    summary["reserved_peak_bytes"] = None if pd.isna(peak) else int(peak)
    at = int(summary["peak_step"])
    row = out[out["step"] == at].iloc[0]
    summary["reserved_gap_at_peak"] = None if pd.isna(row["reserved_bytes"]) else int(row["reserved_bytes"] - row["allocator_bytes"])
    return out, summary


# -- both -----------------------------------------------------------------------------------
def _allocator_summary(out: pd.DataFrame, source: str, clock_error_ns: int) -> dict:
    mismatch = (out["live_bytes"] + out["live_unattributed"] - out["allocator_bytes"]).abs()
    i = out["allocator_peak_bytes"].astype("float64").idxmax()
    j = out["live_unattributed"].idxmax()
    return {
        "source": source,
        "peak_bytes": int(out.at[i, "allocator_peak_bytes"]), "peak_step": int(out.at[i, "step"]),
        "peak_op": out.at[i, "op"],
        "unattributed_at_peak": int(out.at[i, "live_unattributed"]),
        "unattributed_max_bytes": int(out.at[j, "live_unattributed"]), "unattributed_max_step": int(out.at[j, "step"]),
        "unattributed_at_end": int(out["live_unattributed"].iloc[-1]),
        "agrees": bool((mismatch.fillna(0) == 0).all()), "max_mismatch_bytes": int(mismatch.fillna(0).max()),
        "clock_error_ns": clock_error_ns,
    }


def _rss(out: pd.DataFrame, rss: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    if not len(rss):
        return out, {}
    per = rss.groupby("step")["rss"].max().reindex(out["step"]).ffill().bfill()
    out["rss_bytes"] = pd.array(per.to_numpy().round(), dtype="Int64")
    return out, {"start_bytes": int(rss["rss"].iloc[0]), "peak_bytes": int(rss["rss"].max()),
                 "end_bytes": int(rss["rss"].iloc[-1]), "samples": int(len(rss))}
