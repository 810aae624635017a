"""The Chrome Trace Event / Perfetto export: valid by the format's rules, and saying what
the analysis says."""
import json

import pandas as pd
import pytest

from conftest import SCENARIOS, run_cli
from trace_event_format import problems

RUNS = {"seed_two_rows": [], "mlp": ["-p", "batch=64", "-p", "width=32", "-p", "features=16"]}


@pytest.fixture(scope="module", params=sorted(RUNS))
def report(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp("chrome") / request.param
    run_cli("profile", SCENARIOS / f"{request.param}.py", *RUNS[request.param], "-o", folder,
            "--format", "csv,json,chrome", "-q", check=True)
    return folder


def load(folder) -> dict:
    return json.loads((folder / "trace.chrome.json").read_text())


def of_phase(doc, ph) -> list[dict]:
    return [e for e in doc["traceEvents"] if e["ph"] == ph]


def test_export_follows_the_trace_event_format(report):
    assert problems(load(report)) == []


@pytest.mark.parametrize("breakage", ["drop an async end", "overlap two slices", "lose a flow finish",
                                      "unsort", "drop a required key"])
def test_the_checker_catches_broken_traces(report, breakage):
    """The checker itself can fail: each breakage of a valid export is reported."""
    doc = load(report)
    events = doc["traceEvents"]
    if breakage == "drop an async end":
        events.remove(of_phase(doc, "e")[0])
    elif breakage == "overlap two slices":
        of_phase(doc, "X")[0]["dur"] += of_phase(doc, "X")[1]["dur"] + 1
    elif breakage == "lose a flow finish":
        events.remove(of_phase(doc, "f")[0])
    elif breakage == "unsort":
        timed = [e for e in events if e["ph"] != "M"]
        timed[0]["ts"], timed[-1]["ts"] = timed[-1]["ts"], timed[0]["ts"]
    else:
        del of_phase(doc, "b")[0]["id"]
    assert problems(doc) != []


def test_one_span_per_storage_named_and_categorised(report):
    tensors = pd.read_csv(report / "tensors.csv", keep_default_na=False, dtype=str)
    begins = of_phase(load(report), "b")
    assert sorted(e["id"] for e in begins) == sorted(int(i) for i in tensors["id"])
    by_id = {str(e["id"]): (e["name"], e["cat"], e["args"]["nbytes"]) for e in begins}
    expected = {i: (n, r, int(b)) for i, n, r, b in zip(tensors["id"], tensors["name"], tensors["role"], tensors["nbytes"])}
    assert by_id == expected


def test_counters_follow_live_bytes(report):
    doc = load(report)
    summary = json.loads((report / "summary.json").read_text())
    totals = [e["args"]["total"] for e in of_phase(doc, "C") if e["name"] == "live bytes"]
    by_role = [e["args"] for e in of_phase(doc, "C") if e["name"] == "live bytes by role"]
    assert max(totals) == summary["tracked_peak_bytes"]
    assert totals[-1] == sum(summary["bytes_by_role_at_end"].values())
    assert [sum(r.values()) for r in by_role] == totals
    assert {k: v for k, v in by_role[-1].items() if v} == {k: v for k, v in summary["bytes_by_role_at_end"].items() if v}


def test_backward_nodes_on_their_own_track(report):
    doc = load(report)
    nodes = pd.read_csv(report / "nodes.csv", keep_default_na=False, dtype=str)
    tracks = {e["args"]["name"]: e["tid"] for e in of_phase(doc, "M") if e["name"] == "thread_name"}
    backward = [e["name"] for e in of_phase(doc, "X") if e["tid"] == tracks["backward nodes"] and "node" in e["args"]]
    forward = [e for e in of_phase(doc, "X") if e["tid"] == tracks["forward ops"]]
    assert backward == list(nodes["name"])
    assert forward and all(e["cat"] in ("setup", "forward", "after_backward") for e in forward)   # ops, never backward nodes


def test_flows_run_from_the_saving_op_to_the_unpacking_node(report):
    doc = load(report)
    tensors = pd.read_csv(report / "tensors.csv", keep_default_na=False, dtype=str)
    slices = of_phase(doc, "X")

    def slice_at(e):
        return next(s for s in slices if s["tid"] == e["tid"] and s["ts"] <= e["ts"] <= s["ts"] + s["dur"])

    starts = {e["id"]: e for e in of_phase(doc, "s")}
    pairs = set()
    for finish in of_phase(doc, "f"):
        start = starts[finish["id"]]
        source, target = slice_at(start), slice_at(finish)
        assert source["cat"] in ("setup", "forward") and target["cat"] == "backward"
        assert start["args"]["tensor"] in source["args"]["saved"].split(";")
        pairs.add((start["args"]["tensor"], target["name"]))
    expected = {(n, node) for n, by in zip(tensors["name"], tensors["unpacked_by"]) for node in by.split(";") if node}
    assert pairs == expected and pairs


def test_perfetto_trace_processor_reads_it(report):
    tp_module = pytest.importorskip("perfetto.trace_processor")
    try:
        tp = tp_module.TraceProcessor(trace=str(report / "trace.chrome.json"))
    except Exception as exc:   # it downloads its trace_processor binary on first use
        pytest.skip(f"perfetto's trace processor is not available offline here: {type(exc).__name__}")
    try:
        names = tp.query("select name from slice where category = 'backward'").as_pandas_dataframe()["name"]
        nodes = pd.read_csv(report / "nodes.csv", keep_default_na=False, dtype=str)
        assert set(nodes["name"]) <= set(names)
    finally:
        tp.close()
