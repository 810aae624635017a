"""report.html's data, asserted before any HTML: page_data() of real runs and of a big
synthetic trace, and the escaping of the JSON island."""
import json

import pandas as pd
import pytest

from conftest import SCENARIOS, run_cli
from gradmem.analysis import analyze
from gradmem.render.html import HtmlWriter, answer_html, json_island
from gradmem.render.page_data import memory_series, page_data
from gradmem.scenario import load_scenario, run_scenario
from synthetic import big_trace


@pytest.fixture(scope="module")
def two_rows():
    cap, failure = run_scenario(load_scenario(SCENARIOS / "seed_two_rows.py"), {})
    assert failure is None
    return analyze(cap.trace)


def answer_text(data) -> str:
    return "\n".join([s["head"] for s in data["answer"]] + [line for s in data["answer"] for line in s["lines"]])


def test_answer_reads_like_the_worked_solution(two_rows):
    text = answer_text(page_data(two_rows))
    assert "`error` (2,) 8 B = [-120, -365], made by `sub`, saved for PowBackward0.self" in text
    assert "`x` (2, 2) 16 B = [[10, 15], [30, 40]]" in text and "no new bytes" in text
    assert ("The peak: 112 B at step 10, during `PowBackward0` (backward), 12 B of it kernel scratch "
            "that no tensor explains (the allocator's record).") in text
    assert "Tensors alone peaked at 108 B at step 10." in text
    assert "`w.grad` (2,) 8 B = [12150, 16400]" in text
    assert "retain_grad() kept 4 extra copies (28 B, all alive at once)." in text
    # error's slot was released after PowBackward0, but the program still holds it
    assert "`error` (8 B): backward was done with it after PowBackward0 (slot released at step 10)" in text


def test_live_at_peak_adds_up_to_the_peak(two_rows):
    data = page_data(two_rows)
    s = two_rows.summary   # the table is the tracked peak's (the chart marks it); the allocator's is 112 B
    assert data["at_peak"]["bytes"] == s["tracked_peak_bytes"] == data["peak"]["bytes"] == 108
    assert s["peak_bytes"] == 112 and sum(s["peak_by_role"].values()) == 112
    why = {r["name"]: r["why"] for r in data["at_peak"]["rows"]}
    assert why["error"] == "saved slot PowBackward0.self; program variable `error`"
    assert why["error_squared.grad"] == "retained grad of `error_squared` (retain_grad())"
    assert why["grad(error)"] == "gradient in flight, waiting for SubBackward0 (it runs at step 11)"


def test_one_node_row_per_backward_node_with_its_storages(two_rows):
    data = page_data(two_rows)
    assert [n["name"] for n in data["nodes"]] == list(two_rows.nodes["name"])
    ids = dict(zip(two_rows.tensors["name"], two_rows.tensors["id"]))
    pow_row = next(n for n in data["nodes"] if n["name"] == "PowBackward0")
    assert pow_row["unpacked_ids"] == [ids["error"]]
    assert ids["grad(error_squared)"] in pow_row["freed_ids"] and ids["grad(error)"] in pow_row["produced_ids"]


def test_memory_curve_per_step_matches_steps_csv(two_rows):
    m = page_data(two_rows)["memory"]
    assert m["bucket_steps"] == 1 and m["x0"] == list(two_rows.steps["step"])
    assert max(m["hi"]) == 108
    totals = [sum(m["by_role"][r][i] for r in m["by_role"]) for i in range(len(m["x0"]))]
    assert totals == list(two_rows.steps["live_bytes"])


@pytest.fixture(scope="module")
def synthetic():
    return analyze(big_trace(40_000))


def test_buckets_keep_the_exact_peak_and_low(synthetic):
    steps, d = synthetic.steps, synthetic.timeline
    m = memory_series(steps, d, max_points=97)
    assert len(m["x0"]) <= 97 and m["bucket_steps"] > 1
    assert max(m["hi"]) == synthetic.summary["peak_bytes"] == d["live"].max()
    assert min(m["lo"]) == 0
    # every bucket's range holds the exact running totals of its steps
    bucket = pd.cut(d["step"], bins=[-1] + m["x1"], labels=False)
    assert (d.groupby(bucket)["live"].max().to_numpy() <= m["hi"]).all()


def test_big_trace_rows_are_capped_and_counted(synthetic):
    data = page_data(synthetic)
    assert data["storages_total"] == len(synthetic.tensors) > len(data["storages"]["id"])
    assert data["nodes_total"] == len(synthetic.nodes) > len(data["nodes"])
    assert data["at_peak"]["total"] > len(data["at_peak"]["rows"])
    assert data["peak"]["bytes"] == synthetic.summary["peak_bytes"]


NASTY = "</script><b>x<!--\u2028\u2029&"


def test_json_island_cannot_close_its_script():
    text = json_island({"name": NASTY, NASTY: [NASTY]})
    for bad in ("<", ">", "&", "\u2028", "\u2029"):
        assert bad not in text
    assert json.loads(text) == {"name": NASTY, NASTY: [NASTY]}


def test_answer_html_escapes_names():
    out = answer_html([{"head": f"`{NASTY}`", "lines": [NASTY]}])
    assert "<b>" not in out and "</script>" not in out and "<!--" not in out
    assert "<code>&lt;/script&gt;&lt;b&gt;x" in out


def test_profile_and_render_write_the_same_page(tmp_path):
    run_cli("profile", SCENARIOS / "seed_two_rows.py", "-o", tmp_path / "r", "-q", check=True)
    run_cli("render", tmp_path / "r" / "trace.jsonl", "-o", tmp_path / "again", "-q", check=True)
    page = (tmp_path / "r" / "report.html").read_text()
    assert page == (tmp_path / "again" / "report.html").read_text()
    outside = page.replace('"http://www.w3.org/2000/svg"', "")   # the SVG namespace is a name, not a request
    assert "http://" not in outside and "https://" not in outside and "src=" not in page


def test_page_is_filled_completely(two_rows):
    page = HtmlWriter().render(two_rows)
    assert "<!--gradmem:" not in page
    assert page.count("</script>") == 2   # the data island's end and the script's end
