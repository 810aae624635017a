"""Every sentence a report prints is true at the step it names (issue 13, items 1-7).

The runs are real (the seed scenarios and a small MLP, in this process); the oracle is the
trace itself: which node ran when, and when each storage was freed.
"""
import re

import pandas as pd
import pytest

from conftest import SCENARIOS
from gradmem.analysis import analyze
from gradmem.render.html import HtmlWriter
from gradmem.render.page_data import page_data
from gradmem.render.terminal import summary_text
from gradmem.scenario import load_scenario, run_scenario


def profile(name, **params):
    cap, failure = run_scenario(load_scenario(SCENARIOS / f"{name}.py"), params)
    assert failure is None, failure
    return analyze(cap.trace)


@pytest.fixture(scope="module")
def runs():
    return {"seed_one_weight": profile("seed_one_weight"), "seed_two_rows": profile("seed_two_rows"),
            "mlp": profile("mlp", batch=8, width=4, depth=2, features=3)}


def node_end_step(a) -> dict:
    """{node name: the step it ran in}."""
    return dict(zip(a.nodes["name"], a.nodes["step"]))


# -- item 1: "why alive" and "freed after" are true at that step --------------------------------
@pytest.mark.parametrize("name", ["seed_one_weight", "seed_two_rows", "mlp"])
def test_no_gradient_is_said_to_wait_for_a_node_that_already_ran(runs, name):
    a = runs[name]
    data = page_data(a)
    peak_step, ran = data["peak"]["step"], node_end_step(a)
    for row in data["at_peak"]["rows"]:
        why = row["why"]
        if "waiting for " in why:
            node = why.split("waiting for ")[1].split(" (")[0]
            assert ran[node] >= peak_step, f"{row['name']}: {why!r}, but {node} ran at step {ran[node]}"


@pytest.mark.parametrize("name", ["seed_one_weight", "seed_two_rows", "mlp"])
def test_the_root_gradient_is_held_by_the_backward_call(runs, name):
    a = runs[name]
    rows = {r["name"]: r["why"] for r in page_data(a)["at_peak"]["rows"]}
    t = a.tensors.set_index("name")
    if "grad(loss)" in rows:     # at the seed peaks, grad(loss) is still alive
        assert "backward() call holds it until it returns" in rows["grad(loss)"], rows["grad(loss)"]
    assert t.loc["grad(loss)", "freed_after"] == "(backward() returned)"
    lines = [line for s in page_data(a)["answer"] for line in s["lines"]]
    assert not any(line.startswith("After `AccumulateGrad") and "grad(loss)" in line for line in lines), lines
    assert any("When backward() returned" in line and "`grad(loss)`" in line for line in lines), lines


def test_seed_two_rows_peak_reasons_read_as_the_learner_expects(runs):
    rows = {r["name"]: r["why"] for r in page_data(runs["seed_two_rows"])["at_peak"]["rows"]}
    # the peak is inside PowBackward0 (step 10): MeanBackward0 (step 9) already used grad(loss)
    assert rows["grad(loss)"].startswith("the gradient backward() starts from: MeanBackward0 used it at step 9")
    assert rows["grad(error_squared)"] == "gradient in flight: the input of PowBackward0, running now (step 10)"


# -- item 2: the step after backward has its own phase -------------------------------------------
def test_the_step_after_backward_is_not_forward(runs):
    steps = runs["seed_two_rows"].steps
    last = steps.iloc[-1]
    assert last["op"] == "(after backward)"
    assert last["phase"] == "after_backward"
    ranges = page_data(runs["seed_two_rows"])["phases"]
    assert ranges[-1]["phase"] == "after_backward", ranges


# -- item 3: no "None" and no doubled parentheses in user-facing text ---------------------------
def test_no_backward_names_the_file_without_none(tmp_path):
    path = tmp_path / "nobw.py"
    path.write_text("import torch\nw = torch.ones(2, requires_grad=True)\nloss = (w * 2).sum()\n")
    cap, failure = run_scenario(load_scenario(path), {})
    text = summary_text(analyze(cap.trace))
    assert "None" not in text, text
    assert f"stopped by NoBackward at {path}: no backward pass ran" in text


def test_freed_steps_never_read_none_or_double_parentheses(runs):
    for a in runs.values():
        texts = [line for s in page_data(a)["answer"] for line in [s["head"], *s["lines"]]]
        texts += [r["why"] for r in page_data(a)["at_peak"]["rows"]]
        texts.append(summary_text(a))
        for text in texts:
            assert "None" not in text and "((" not in text, text


# -- item 7: an estimate is unmistakable ---------------------------------------------------------
def test_fake_run_is_an_estimate_in_the_page_header_and_the_first_terminal_line():
    cap, failure = run_scenario(load_scenario(SCENARIOS / "seed_two_rows.py"), {}, fake=True)
    a = analyze(cap.trace)
    first = summary_text(a).splitlines()[0]
    assert first.startswith("gradmem: ESTIMATE (fake tensors, nothing allocated): seed_two_rows"), first
    page = HtmlWriter().render(a)
    heading = re.search(r"<h1>(.*?)</h1>", page).group(1)
    meta = re.search(r'<p class="meta">(.*?)</p>', page).group(1)
    assert heading.startswith("ESTIMATE (fake tensors, nothing allocated): seed_two_rows"), heading
    assert "status complete" not in meta and "estimate from fake tensors" in meta, meta


DROPS_AFTER_BACKWARD = """\
import torch
x = torch.tensor([[10., 15.], [30., 40.]]); y = torch.tensor([20., 25.])
w = torch.tensor([5., 6.], requires_grad=True)
error = y - x @ w
loss = (error ** 2).mean()
loss.backward()
del error
"""


def test_a_storage_freed_after_backward_reads_without_doubled_parentheses(tmp_path):
    path = tmp_path / "drops.py"
    path.write_text(DROPS_AFTER_BACKWARD)
    cap, failure = run_scenario(load_scenario(path), {})
    lines = [line for s in page_data(analyze(cap.trace))["answer"] for line in s["lines"]]
    held = [line for line in lines if line.startswith("`error` (8 B)")]
    assert held and held[0].endswith("yet it stayed until step 14 (after backward) because the program still held it."), held


# -- item 5: one plain statement of the peak, then a breakdown that adds up ---------------------
def test_the_terminal_states_one_peak_and_its_parts_add_up(runs):
    a = runs["seed_two_rows"]
    alloc = a.summary["allocator"]
    lines = summary_text(a).splitlines()
    peaks = [line for line in lines if "peak" in line.split(":")[0]]
    assert peaks[0].startswith("  peak: "), lines
    total, tracked, scratch = (int(n) for n in re.findall(r"(\d+) B", peaks[0])[:3])
    assert total == alloc["peak_bytes"] == 112          # the allocator's record, kernel scratch included
    assert scratch == alloc["unattributed_at_peak"] == 12
    assert tracked + scratch == total
    assert "at most 0 B (step 0)" not in summary_text(a)
    # the hooks-only peak is given once, as what it is, not as a second "peak"
    tracked_peak = a.summary.get("tracked_peak_bytes", a.summary["peak_bytes"])   # peak semantics: issue 12
    assert sum(f"{tracked_peak} B" in line for line in lines) == 1, lines
    assert not any(line.startswith("  allocator: peak") for line in lines), lines


# -- item 6: tensors made before the capture carry their values too ------------------------------
def test_tensors_made_before_the_capture_show_their_values():
    import torch
    import gradmem
    x = torch.tensor([[10., 15.], [30., 40.]]); y = torch.tensor([20., 25.])      # an earlier cell
    w = torch.tensor([5., 6.], requires_grad=True)
    with gradmem.capture() as cap:
        loss = ((y - x @ w) ** 2).mean()
        loss.backward()
    t = cap.tensors.set_index("name")
    assert t.loc["x", "created_by"] == "(before capture)"
    assert t.loc["x", "value"] == "[[10, 15], [30, 40]]"
    assert t.loc["y", "value"] == "[20, 25]" and t.loc["w", "value"] == "[5, 6]"
    assert t.loc["w.grad", "value"] == "[12150, 16400]"
    csv = pd.read_csv(__import__("io").StringIO(cap.tensors.to_csv(index=False)), keep_default_na=False, dtype=str)
    assert "nan" not in set(csv["value"].str.lower()), list(csv["value"])


# -- item 4: torch's ".grad of a non-leaf" warning points at the scenario's line ------------------
READS_GRAD = """\
import torch
x = torch.tensor([10., 15.])
w = torch.tensor([5., 6.], requires_grad=True)
out = x * w
out.retain_grad()
out.sum().backward()
seen = out.grad
"""


def test_non_leaf_grad_warning_points_at_the_scenario_line(tmp_path):
    import warnings
    path = tmp_path / "reads_grad.py"
    path.write_text(READS_GRAD)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cap, failure = run_scenario(load_scenario(path), {}, retain_grad="off")
    assert failure is None
    ours = [w for w in caught if "not a leaf Tensor" in str(w.message)]
    assert ours, [str(w.message) for w in caught]
    assert all(w.filename == str(path) and w.lineno == 7 for w in ours), [(w.filename, w.lineno) for w in ours]
    assert "--retain-grad off" in str(ours[0].message)
