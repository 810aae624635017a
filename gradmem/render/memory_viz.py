"""A snapshot for PyTorch's memory viewer (https://pytorch.org/memory_viz, or
``python -m torch.cuda._memory_viz trace_plot memory_viz.pickle``).

The layout follows ``torch.cuda._memory_viz._profile_to_snapshot``: one device trace per
device (CUDA devices by index, then the CPU), each a list of ``alloc`` /
``free_requested`` / ``free_completed`` actions with ``addr``, ``size``, ``stream`` and
``frames``, and ``segments`` holding the blocks still allocated at the end. Every
allocation carries a ``category``: its gradmem role.

Addresses are made up. gradmem identifies storages by its own id, not by pointer, so each
storage gets a fake address: a per-device base plus the space of all storages with a
smaller id on that device, each rounded up to 512 bytes. Addresses are stable for a trace,
never overlap and are never reused, so the viewer shows every storage as its own block.
Storages of zero bytes are left out: they hold no memory.

The viewer's JavaScript fails unless some allocation has category ``unknown`` (it then
tries to append ``unknown`` itself, through a misspelt variable). When no storage is
``unattributed`` (which maps to ``unknown``), a zero-byte placeholder is allocated and
freed at the start, named so in its frame.
"""
from __future__ import annotations

import json
import pickle

import pandas as pd
from ..files import MEMORY_VIZ_JSON, MEMORY_VIZ_PICKLE

BASE_ADDRESS = 0x7F0000000000
DEVICE_STRIDE = 0x10000000000      # address space between devices
ALIGN = 512
CATEGORY = {"unattributed": "unknown"}   # every other role is its own category
PLACEHOLDER = "gradmem placeholder: the viewer needs one allocation in category 'unknown'"


def device_index(device: str, cuda_count: int) -> int:
    """CUDA devices by index, everything else (the CPU) after them, as torch does."""
    if device.startswith("cuda"):
        return int(device.partition(":")[2] or 0)
    return cuda_count


def cuda_count(devices) -> int:
    indices = [int(d.partition(":")[2] or 0) for d in devices if d.startswith("cuda")]
    return max(indices) + 1 if indices else 0


def addresses(tensors: pd.DataFrame, devices: pd.Series) -> dict[int, int]:
    """{storage id: fake address}, packed in id order on each device."""
    out, next_free = {}, {}
    for sid, nbytes, dev in sorted(zip(tensors["id"], tensors["nbytes"], devices)):
        start = next_free.get(dev, BASE_ADDRESS + dev * DEVICE_STRIDE)
        out[int(sid)] = start
        next_free[dev] = start + -(-int(nbytes) // ALIGN) * ALIGN
    return out


def frames_of(t, scenario: str) -> list[dict]:
    """The block's description, then the user's line that made it (named by its module)."""
    made = f"made by {t.created_by} at step {t.alloc_step}"
    saved = f", saved by {t.saved_by}" if t.saved_by else ""
    frames = [{"filename": scenario or "gradmem", "line": int(t.alloc_step),
               "name": f"{t.name} [{t.role}] {t.shape} {t.dtype}, {made}{saved}"}]
    file, _, line = str(t.source).rpartition(":")
    if file and line.isdigit():
        frames.append({"filename": file, "line": int(line), "name": t.module or "(no module)"})
    return frames


def _alloc(t, addr: int, scenario: str) -> dict:
    return {"action": "alloc", "addr": addr, "size": int(t.nbytes), "stream": 0,
            "frames": frames_of(t, scenario), "category": CATEGORY.get(t.role, t.role)}


def _frees(alloc: dict) -> list[dict]:
    return [{"action": action, "addr": alloc["addr"], "size": alloc["size"], "stream": 0, "frames": alloc["frames"]}
            for action in ("free_requested", "free_completed")]


def device_traces(tensors: pd.DataFrame, dev: pd.Series, addr: dict, n_devices: int, scenario: str):
    """(device traces, {storage: its alloc record}) in event order, as _profile_to_snapshot builds them."""
    actions = []    # (seq, order, device, records)
    allocs = {}
    for t, d in zip(tensors.itertuples(), dev):
        record = _alloc(t, addr[int(t.id)], scenario)
        allocs[int(t.id)] = (d, record)
        if t.alloc_seq >= 0:     # storages alive before the capture have no alloc action
            actions.append((int(t.alloc_seq), 0, d, [record]))
        if pd.notna(t.free_seq):
            actions.append((int(t.free_seq), 1, d, _frees(record)))
    traces = [[] for _ in range(n_devices)]
    for _, _, d, records in sorted(actions, key=lambda a: (a[0], a[1])):
        traces[d].extend(records)
    return traces, allocs


def placeholder(trace: list[dict], device: int, scenario: str) -> None:
    addr = BASE_ADDRESS + device * DEVICE_STRIDE - ALIGN
    record = {"action": "alloc", "addr": addr, "size": 0, "stream": 0, "category": "unknown",
              "frames": [{"filename": scenario or "gradmem", "line": 0, "name": PLACEHOLDER}]}
    trace[:0] = [record] + _frees(record)


def segment(device: int, records: list[dict], alive: list[dict]) -> dict:
    """One segment spanning every address used on the device; blocks alive at the end."""
    address = min(r["addr"] for r in records)
    total = max(r["addr"] + r["size"] for r in records) - address
    blocks, cursor = [], address
    for r in sorted(alive, key=lambda r: r["addr"]):
        if r["addr"] > cursor:
            blocks.append({"size": r["addr"] - cursor, "state": "inactive"})
        blocks.append({"size": r["size"], "state": "active_allocated", "requested_size": r["size"],
                       "frames": r["frames"]})
        cursor = r["addr"] + r["size"]
    if cursor < address + total:
        blocks.append({"size": address + total - cursor, "state": "inactive"})
    used = sum(r["size"] for r in alive)
    return {"device": device, "address": address, "total_size": total, "allocated_size": used,
            "active_size": used, "requested_size": used, "stream": 0, "segment_type": "large",
            "blocks": blocks or [{"size": total, "state": "inactive"}]}


def snapshot(analysis) -> dict:
    tensors = analysis.tensors[analysis.tensors["nbytes"] > 0]
    scenario = analysis.summary.scenario
    count = cuda_count(set(tensors["device"]))
    dev = tensors["device"].map(lambda d: device_index(str(d), count))
    addr = addresses(tensors, dev)
    traces, allocs = device_traces(tensors, dev, addr, count + 1, scenario)
    if not any(r.get("category") == "unknown" for tr in traces for r in tr):
        home = int(dev.iloc[0]) if len(dev) else count
        placeholder(traces[home], home, scenario)
    alive = tensors["free_seq"].isna()
    segments = []
    for d in sorted(set(dev)):
        on_device = [allocs[int(s)][1] for s, dd in zip(tensors["id"], dev) if dd == d]
        at_end = [allocs[int(s)][1] for s, dd, a in zip(tensors["id"], dev, alive) if dd == d and a]
        segments.append(segment(int(d), on_device, at_end))
    return {"segments": segments, "device_traces": traces}


class MemoryVizPickleWriter:
    filename = MEMORY_VIZ_PICKLE

    def render(self, analysis) -> bytes:
        return pickle.dumps(snapshot(analysis), protocol=4)


class MemoryVizJsonWriter:
    filename = MEMORY_VIZ_JSON

    def render(self, analysis) -> str:
        return json.dumps(snapshot(analysis)) + "\n"
