"""comparison.html in real headless Chromium: loads clean and offline, draws its three
charts, keeps their cursors together, and says what retain_grad kept."""
import pandas as pd
import pytest

from browser import assert_clean_offline, browser, open_page, painted_pixels, screenshot  # noqa: F401
from conftest import SCENARIOS, run_cli

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def seed_compare(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare") / "seed_two_rows"
    run_cli("compare", SCENARIOS / "seed_two_rows.py", "-o", out, "-q", check=True)
    return out


def hover(browser, canvas_id: str, row: float):
    """Move the mouse over a chart at an aligned row (the charts' left and right padding: 70, 20)."""
    from selenium.webdriver.common.action_chains import ActionChains
    canvas = browser.find_element("id", canvas_id)
    rows = browser.execute_script("const s = window.gradmemCompare.data.series; return s.x1[s.x1.length - 1] + 1;")
    width, height = canvas.size["width"], canvas.size["height"]
    x = 70 + row / rows * (width - 70 - 20)
    ActionChains(browser).move_to_element_with_offset(canvas, int(x - width / 2), 0).perform()


def cursor_column(browser, canvas_id: str) -> list[int]:
    """x pixels (in CSS px) of the blue cursor line drawn on a chart."""
    return browser.execute_script(
        "const c = document.getElementById(arguments[0]), d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "const dpr = window.devicePixelRatio || 1, y = Math.round(40 * dpr), xs = [];"   # inside the plot: below the node ticks
        "for (let x = 0; x < c.width; x++) { const i = (y * c.width + x) * 4;"
        "  if (d[i] === 31 && d[i + 1] === 79 && d[i + 2] === 209) xs.push(Math.round(x / dpr)); }"
        "return xs;", canvas_id)


def test_seed_comparison_page_loads_offline_and_draws(browser, seed_compare):
    page = seed_compare / "comparison.html"
    open_page(browser, page)
    assert_clean_offline(browser, page)
    for canvas in ("chart-a", "chart-b", "chart-diff"):
        assert painted_pixels(browser, canvas) > 3_000, canvas
    answer = browser.find_element("id", "answer").text
    extra = pd.read_csv(seed_compare / "comparison.csv").query("kind == 'storage'")
    assert f"kept {len(extra)} gradients" in answer and f"+{int(extra['nbytes'].sum())} B" in answer
    for name in extra["name"]:
        assert name in answer and name in browser.find_element("id", "extra-table").text
    assert "The tensors' peak rose from 96 B" in answer and "to 108 B" in answer
    # the header's allocator peaks hold 4 B of kernel scratch each: said beside the tensors'
    header = browser.find_element("tag name", "header").text
    assert "peak 100 B at step 10 (tensors alone 96 B)" in header and "peak 112 B at step 10 (tensors alone 108 B)" in header
    screenshot(browser, "compare_seed_two_rows.png")


def test_cursor_is_shared_by_the_three_charts(browser, seed_compare):
    open_page(browser, seed_compare / "comparison.html")
    assert all(cursor_column(browser, c) == [] for c in ("chart-a", "chart-b", "chart-diff"))
    hover(browser, "chart-a", 12.5)
    assert browser.execute_script("return window.gradmemCompare.state.cursor") == 12
    columns = [cursor_column(browser, c) for c in ("chart-a", "chart-b", "chart-diff")]
    assert columns[0] and columns[0] == columns[1] == columns[2]
    readout = browser.find_element("id", "readout").text
    assert "off: step 12 MvBackward0 (backward), 72 B live" in readout
    assert "on: step 12 MvBackward0 (backward), 100 B live" in readout and "difference +28 B" in readout
    hover(browser, "chart-diff", 9.5)
    assert browser.execute_script("return window.gradmemCompare.state.cursor") == 9
    assert cursor_column(browser, "chart-a") == cursor_column(browser, "chart-diff") != columns[0]


def test_node_ticks_are_named_where_they_fit(browser, seed_compare):
    """Each tick above a chart marks a backward node's step; the names drawn over them are
    those nodes' (from comparison.csv's steps), in order, and never overlap."""
    open_page(browser, seed_compare / "comparison.html")
    labels = browser.execute_script("return window.gradmemCompare.state.tickLabels")
    rows = browser.execute_script("return window.gradmemCompare.data.series.rows")
    for chart, side in (("chart-a", "a"), ("chart-b", "b"), ("chart-diff", "b")):
        drawn = labels[chart]
        nodes = [op for op, is_node in zip(rows["op_" + side], rows["node_" + side]) if is_node]
        assert drawn and all(d["name"] in nodes for d in drawn), (chart, drawn)
        left = iter(nodes)
        assert all(any(d["name"] == n for n in left) for d in drawn), (chart, drawn)   # in node order
        assert all(a["x"] + a["half"] + 6 < b["x"] - b["half"] for a, b in zip(drawn, drawn[1:])), drawn
    assert "A tick above a chart marks a step that ran a backward node" in browser.find_element("id", "memory-note").text
