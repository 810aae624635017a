"""The memory_viz export: a snapshot torch.cuda._memory_viz reads back, whose allocations
and frees replay to the live bytes gradmem measured."""
import base64
import json
import pickle
import re

import pandas as pd
import pytest
from torch.cuda import _memory_viz

from conftest import SCENARIOS, run_cli


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("memviz") / "seed_two_rows"
    run_cli("profile", SCENARIOS / "seed_two_rows.py", "-o", folder, "--format", "csv,json,memory_viz", "-q", check=True)
    return folder


@pytest.fixture(scope="module")
def snapshot(report):
    with open(report / "memory_viz.pickle", "rb") as f:
        return pickle.load(f)


def tensors(report) -> pd.DataFrame:
    t = pd.read_csv(report / "tensors.csv", keep_default_na=False, dtype={"free_seq": str})
    return t[t["nbytes"] > 0]


def test_pickle_is_protocol_4_and_json_holds_the_same(report, snapshot):
    raw = (report / "memory_viz.pickle").read_bytes()
    assert raw[:2] == b"\x80\x04"
    assert json.loads((report / "memory_viz.json").read_text()) == snapshot


def test_memory_viz_trace_plot_embeds_it(snapshot):
    html = _memory_viz.trace_plot(snapshot)
    encoded = json.loads(re.search(r"const local_files = (\[.*\])", html).group(1))[0]["base64"]
    assert pickle.loads(base64.b64decode(encoded).rstrip(b"\x00")) == snapshot


def test_memory_viz_text_readers_accept_it(report, snapshot):
    at_end = tensors(report)[lambda t: t["free_seq"] == ""]
    stats = _memory_viz.segsum(snapshot)      # checks its own byte accounting
    assert f"total_allocated: {_memory_viz.Bytes(int(at_end['nbytes'].sum()))}" in stats
    lines = _memory_viz.segments(snapshot, format_flamegraph=lambda text: text).splitlines()
    active = [int(line.rsplit(" ", 1)[1]) for line in lines if ";active_allocated;" in line]
    assert sorted(active) == sorted(at_end["nbytes"])
    listing = _memory_viz.trace(snapshot).splitlines()
    actions = [e["action"] for tr in snapshot["device_traces"] for e in tr]
    assert sum(bool(re.match(r"\w+ = ", line)) for line in listing) == actions.count("alloc")
    assert sum(line.startswith("# free completed") for line in listing) == actions.count("free_completed")


def replay(trace: list[dict]) -> tuple[dict, int]:
    """Apply the actions in order: ({addr: size} alive at the end, highest live bytes)."""
    live, pending, peak = {}, set(), 0
    for e in trace:
        if e["action"] == "alloc":
            assert e["addr"] not in live, "an address allocated twice while alive"
            live[e["addr"]] = e["size"]
        elif e["action"] == "free_requested":
            pending.add(e["addr"])
        elif e["action"] == "free_completed":
            assert e["addr"] in pending, "free_completed without free_requested"
            pending.discard(e["addr"])
            live.pop(e["addr"], None)    # storages from before the capture have no alloc
        peak = max(peak, sum(live.values()))
    assert not pending
    return live, peak


def test_actions_replay_to_the_measured_peak_and_end_state(report, snapshot):
    summary = json.loads((report / "summary.json").read_text())
    (trace,) = [tr for tr in snapshot["device_traces"] if tr]
    live, peak = replay(trace)
    assert peak == summary["tracked_peak_bytes"]
    blocks = [b for seg in snapshot["segments"] for b in seg["blocks"] if b["state"] == "active_allocated"]
    assert sorted(live.values()) == sorted(b["size"] for b in blocks)
    assert sum(live.values()) == sum(summary["bytes_by_role_at_end"].values())


def test_one_alloc_per_storage_with_its_role_and_one_unknown(report, snapshot):
    (trace,) = [tr for tr in snapshot["device_traces"] if tr]
    allocs = [e for e in trace if e["action"] == "alloc"]
    known = [e for e in allocs if e["category"] != "unknown"]
    t = tensors(report)
    assert sorted(e["category"] for e in known) == sorted(t["role"])
    assert [e["size"] for e in allocs if e["category"] == "unknown"] == [0]   # the viewer needs one
    names = [e["frames"][0]["name"].split(" [")[0] for e in known]
    assert sorted(names) == sorted(t["name"])
    assert len({e["addr"] for e in allocs}) == len(allocs)


def test_addresses_are_stable_across_renders(report, tmp_path):
    run_cli("render", report / "trace.jsonl", "-o", tmp_path / "again", "--format", "memory_viz", "-q", check=True)
    first = json.loads((report / "memory_viz.json").read_text())
    again = json.loads((tmp_path / "again" / "memory_viz.json").read_text())
    assert first == again
