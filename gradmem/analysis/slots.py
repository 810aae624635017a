"""Saved slots, built once: the storage each pack holds, the "Node.field" that owns it, and
when it was saved, unpacked and released. Every pass and every report reads these instead
of joining the per-kind event tables again.

A pack is one saved reference (what the pack hook returned); several packs can hold the
same storage. A pack with no ``slot`` event was saved by a node outside the loss's graph,
or by ``torch.utils.checkpoint`` itself: non-reentrant checkpoint keeps its block's inputs
in slots no node owns, to run the block's forward again in backward.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from .tables import each_row, pairs

CHECKPOINT_KEPT = "torch.utils.checkpoint (an input it keeps to run the forward again in backward)"


@dataclass(frozen=True)
class Slots:
    storage_of: dict            # {pack: storage}
    owner: dict                 # {pack: "Node.field"}, packs whose node is known
    saved: pd.DataFrame         # seq, step, pack, storage: one row per pack event
    unpacked: pd.DataFrame      # seq, step, pack, node, storage: one row per unpack
    released: pd.DataFrame      # seq, step, pack, storage: one row per slot release
    hidden: pd.DataFrame        # storage, owner: slots saved before the capture began

    def open_at(self, seq: int, unknown: str) -> dict[int, list[str]]:
        """{storage: ["Node.field", ...]} for the slots still held just after event ``seq``;
        ``unknown`` names the owner of a pack without a slot event."""
        saved = self.saved[self.saved["seq"] <= seq]
        released = self.released.drop_duplicates("pack").set_index("pack")["seq"]
        still = saved[saved["pack"].map(released).fillna(float("inf")) > seq]
        out: dict[int, list[str]] = {}
        for pack, storage in each_row(still, "pack", "storage"):
            out.setdefault(int(storage), []).append(self.owner.get(pack, unknown))
        return out

    def steps_by_storage(self, kind: str, ids: set) -> dict[int, list[int]]:
        """{storage: the sorted steps it was saved / unpacked / released in}, for ``ids``."""
        ev = getattr(self, kind)
        ev = ev[ev["storage"].isin(ids)]
        out: dict[int, set] = {}
        for s, step in zip(ev["storage"].astype(int).tolist(), ev["step"].astype(int).tolist()):
            out.setdefault(s, set()).add(step)
        return {s: sorted(v) for s, v in out.items()}


def owner_labels(frame: pd.DataFrame, node_name: dict[int, str]) -> list[str]:
    """"Node.field" for each row of a slot or hidden_slot table."""
    return [f"{node_name.get(int(n), n)}.{f}" for n, f in each_row(frame, "node", "field")]


def _checkpoint_owned(saved: pd.DataFrame) -> dict:
    if "kept_for" not in saved:
        return {}
    return {p: CHECKPOINT_KEPT for p in saved.loc[saved["kept_for"] == "checkpoint", "pack"].tolist()}


def build_slots(tables: dict[str, pd.DataFrame], node_name: dict[int, str]) -> Slots:
    slot = tables["slot"].drop_duplicates("pack")
    storage_of = pairs(tables["saved"]["pack"], tables["saved"]["storage"])
    on_storage = lambda f: f.assign(storage=f["pack"].map(storage_of))  # noqa: E731
    hidden = tables["hidden_slot"].dropna(subset=["storage"])
    return Slots(
        storage_of=storage_of,
        owner={**_checkpoint_owned(tables["saved"]), **dict(zip(slot["pack"].tolist(), owner_labels(slot, node_name)))},
        saved=tables["saved"][["seq", "step", "pack", "storage"]],
        unpacked=on_storage(tables["unpacked"][["seq", "step", "pack", "node"]]),
        released=on_storage(tables["released"][["seq", "step", "pack"]]),
        hidden=pd.DataFrame({"storage": hidden["storage"].tolist(), "owner": owner_labels(hidden, node_name)}),
    )
