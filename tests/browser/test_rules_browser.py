"""The rules section and the charts' labels in real headless Chromium: the two-rows page
reads as the learner's derivation, and at a notebook's width (900 px) on the mlp scenario
no backward-node label overlaps another or is cut (label boxes measured in the browser).
Screenshots of the three seed pages go to tests/artifacts/."""
import math

import pandas as pd
import pytest

from browser import assert_clean_offline, browser, open_page, screenshot  # noqa: F401
from conftest import SCENARIOS, run_cli

pytestmark = pytest.mark.browser
SLANT = math.sqrt(0.5)


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    root = tmp_path_factory.mktemp("rules-pages")
    for name in ("seed_one_weight", "seed_two_weights", "seed_two_rows"):
        run_cli("profile", SCENARIOS / f"{name}.py", "-o", root / name, "-q", check=True)
    run_cli("profile", SCENARIOS / "mlp.py", "-p", "batch=256", "-p", "width=128", "-o", root / "mlp", "-q", check=True)
    return root


def rule_card(browser, node):
    return browser.find_element("css selector", f"#rules .rule-node[data-node='{node}']")


def test_two_rows_rules_read_as_the_hand_derivation(browser, pages):
    page = pages / "seed_two_rows" / "report.html"
    open_page(browser, page)
    assert_clean_offline(browser, page)
    pow_card = rule_card(browser, "PowBackward0")
    lines = [e.text for e in pow_card.find_elements("css selector", ".formula, .numbers")]
    assert lines[0] == "grad(error) = grad(error_squared) · 2 · error"
    assert lines[1] == "2 · error = [-240, -730]"
    assert lines[2].startswith("grad(error) = [0.5, 0.5] · [-240, -730] = [-120, -365]")
    assert "torch computed [-120, -365]" in lines[2]
    assert "error (self: the base of the power rule" in pow_card.text
    assert "Saved nothing" in rule_card(browser, "SubBackward0").text
    assert "grad(w) = xᵀ · grad(output)" in rule_card(browser, "MvBackward0").text
    forward = browser.find_element("id", "forward-values").text
    for value in ("[140, 390]", "[-120, -365]", "[14400, 133225]", "73812.5"):
        assert value in forward
    assert "torch.tensor(...) at line 20" in forward and "lift_fresh" not in forward
    assert "lift_fresh" not in browser.find_element("id", "nodes-table").text
    assert "slot" in browser.find_element("id", "glossary").text


@pytest.mark.parametrize("seed", ["seed_one_weight", "seed_two_weights", "seed_two_rows"])
def test_seed_page_screenshot(browser, pages, seed):
    open_page(browser, pages / seed / "report.html")
    assert len(browser.find_elements("css selector", "#rules .ok")) == 3 + (seed == "seed_two_rows")   # one per node with a derivative
    height = browser.execute_script("return document.body.scrollHeight")
    browser.set_window_size(1300, height + 100)
    screenshot(browser, f"rules_{seed}.png")
    browser.set_window_size(1300, 2400)


def _overlap(a, b) -> bool:
    """Two labels slanted 45 degrees up-right, each from its anchor (x, y): boxes of length
    w along the slant and height h across it, compared in the slanted frame."""
    def frame(p):
        u = (p["x"] - p["y"]) * SLANT          # along the text
        n = (-p["x"] - p["y"]) * SLANT         # across it, upwards
        return (u, u + p["w"]), (n, n + p["h"])
    (au, an), (bu, bn) = frame(a), frame(b)
    return au[0] < bu[1] and bu[0] < au[1] and an[0] < bn[1] and bn[0] < an[1]


def test_mlp_node_labels_readable_at_900_px(browser, pages):
    browser.set_window_size(900, 2400)
    try:
        open_page(browser, pages / "mlp" / "report.html")
        nodes = list(pd.read_csv(pages / "mlp" / "nodes.csv")["name"])
        chart = browser.execute_script("const c = document.getElementById('chart');"
                                       "return {labels: window.gradmemReport.state.labels, w: c.clientWidth};")
        labels = chart["labels"]
        assert len(labels) >= len(nodes) // 2, labels
        for lab in labels:
            assert lab["text"] == lab["name"], lab                      # never cut to "AccumulateGrad(model…"
            assert lab["y"] - (lab["w"] + lab["h"]) * SLANT >= 0, lab   # inside the canvas at the top
            assert lab["x"] + lab["w"] * SLANT <= chart["w"], lab       # and at the right
        assert not [(a["name"], b["name"]) for i, a in enumerate(labels) for b in labels[i + 1:] if _overlap(a, b)]
        svg_labels = browser.execute_script(
            "const box = document.querySelector('#lifetimes-box svg').getBoundingClientRect();"
            "return [...document.querySelectorAll('#lifetimes-box .node-label')].map(t => {"
            "  const r = t.getBoundingClientRect();"
            "  return {name: t.textContent, x: +t.getAttribute('x'), y: +t.getAttribute('y'), w: t.getComputedTextLength(),"
            "          h: 10, inside: r.left >= box.left && r.right <= box.right && r.top >= box.top}; });")
        assert svg_labels and all(s["inside"] for s in svg_labels), svg_labels
        assert not [(a["name"], b["name"]) for i, a in enumerate(svg_labels) for b in svg_labels[i + 1:] if _overlap(a, b)]
        cells = browser.execute_script(
            "return [...document.querySelectorAll('#nodes-table tbody tr')].map(r => { const c = r.children[1];"
            " return {text: c.textContent, cut: c.scrollWidth > c.clientWidth + 1}; });")
        assert [c["text"] for c in cells] == nodes
        assert not [c for c in cells if c["cut"]]
        screenshot(browser, "rules_mlp_900.png")
    finally:
        browser.set_window_size(1300, 2400)


def test_hide_fixed_and_log_scale(browser, pages):
    open_page(browser, pages / "mlp" / "report.html")
    rows = len(browser.find_elements("css selector", "#lifetimes-box g.row"))
    browser.find_element("id", "hide-fixed").click()
    browser.find_element("id", "log-scale").click()
    state = browser.execute_script("return window.gradmemReport.state")
    assert state["hideFixed"] and state["log"]
    fewer = len(browser.find_elements("css selector", "#lifetimes-box g.row"))
    tensors = pd.read_csv(pages / "mlp" / "tensors.csv")
    assert rows - fewer == tensors["role"].isin(["input", "parameter"]).sum()
