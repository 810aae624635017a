"""report.html in real headless Chromium: loads clean and offline, draws, hovers, highlights,
escapes, and copes with a 1,000,000-event trace. Screenshots go to tests/artifacts/."""
import pandas as pd
import pytest

from browser import assert_clean_offline, browser, console_errors, open_page, painted_pixels, screenshot  # noqa: F401
from conftest import SCENARIOS, run_cli
from gradmem.analysis import analyze
from gradmem.render import write_reports
from gradmem.trace import read_trace, write_trace
from synthetic import big_trace

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def seed_page(tmp_path_factory):
    out = tmp_path_factory.mktemp("html") / "seed_two_rows"
    run_cli("profile", SCENARIOS / "seed_two_rows.py", "-o", out, "-q", check=True)
    return out


def test_seed_page_loads_offline_and_draws(browser, seed_page):
    page = seed_page / "report.html"
    open_page(browser, page)
    assert_clean_offline(browser, page)
    assert painted_pixels(browser) > 10_000
    answer = browser.find_element("id", "answer").text
    assert "PowBackward0" in answer and "error" in answer and "[12150, 16400]" in answer
    rows = browser.find_elements("css selector", "#nodes-table tbody tr")
    nodes = pd.read_csv(seed_page / "nodes.csv")
    assert [r.find_elements("tag name", "td")[1].text for r in rows] == list(nodes["name"])
    assert len(browser.find_elements("css selector", "#lifetimes-box g.row")) == 18
    assert "x" in browser.find_element("id", "peak-table").text
    screenshot(browser, "seed_two_rows.png")


def hover_canvas_at_step(browser, step: float):
    from selenium.webdriver.common.action_chains import ActionChains
    canvas = browser.find_element("id", "chart")
    frac = browser.execute_script("const s = window.gradmemReport.data.memory; return arguments[0] / (s.x1[s.x1.length - 1] + 1);", step)
    width, height = canvas.size["width"], canvas.size["height"]
    x = 64 + frac * (width - 64 - 70)   # the chart's left and right padding
    ActionChains(browser).move_to_element_with_offset(canvas, int(x - width / 2), int(height / 2 - 40)).perform()


def test_hover_names_the_step_and_lists_live_tensors(browser, seed_page):
    open_page(browser, seed_page / "report.html")
    hover_canvas_at_step(browser, 10.5)
    tip = browser.find_element("id", "tooltip")
    assert tip.is_displayed()
    assert "step 10 \u00b7 PowBackward0 (backward)" in tip.text
    assert "highest inside: 108 B" in tip.text


def test_clicking_a_node_highlights_its_tensors(browser, seed_page):
    open_page(browser, seed_page / "report.html")
    tensors = pd.read_csv(seed_page / "tensors.csv", keep_default_na=False)
    ids = dict(zip(tensors["name"], tensors["id"].astype(str)))
    row = next(r for r in browser.find_elements("css selector", "#nodes-table tbody tr") if "PowBackward0" in r.text)
    row.click()
    ids_of = lambda cls: {g.get_attribute("data-id") for g in browser.find_elements("css selector", f"#lifetimes-box g.{cls}")}  # noqa: E731
    assert ids_of("hl-unpacked") == {ids["error"]}
    assert ids["grad(error)"] in ids_of("hl-produced")
    assert ids["grad(error_squared)"] in ids_of("hl-freed")
    assert ids["y"] in ids_of("dim")
    assert "selected" in row.get_attribute("class")
    screenshot(browser, "seed_two_rows_selected.png")


def test_drag_zooms_and_double_click_resets(browser, seed_page):
    from selenium.webdriver.common.action_chains import ActionChains
    open_page(browser, seed_page / "report.html")
    canvas = browser.find_element("id", "chart")
    ActionChains(browser).move_to_element_with_offset(canvas, -200, 0).click_and_hold().move_by_offset(200, 0).release().perform()
    view = browser.execute_script("return window.gradmemReport.state.view")
    assert view is not None and 0 < view[1] - view[0] < 14
    ActionChains(browser).double_click(canvas).perform()
    assert browser.execute_script("return window.gradmemReport.state.view") is None
    assert console_errors(browser) == []


NASTY = "</script><b>x"


def test_a_hostile_name_renders_as_text(browser, seed_page, tmp_path):
    trace = read_trace(seed_page / "trace.jsonl")
    events = tuple(e._replace(data={**e.data, "name": NASTY}) if e.kind == "name" and e.data["name"] == "error"
                   else e._replace(data={**e.data, "name": "y<!--\u2028"}) if e.kind == "name" and e.data["name"] == "y"
                   else e for e in trace.events)
    write_trace(trace.__class__(trace.meta, events), tmp_path / "trace.jsonl")
    run_cli("render", tmp_path / "trace.jsonl", "-o", tmp_path / "out", "-q", check=True)
    page = tmp_path / "out" / "report.html"
    open_page(browser, page)
    assert_clean_offline(browser, page)
    assert browser.find_elements("tag name", "b") == []
    assert NASTY in browser.find_element("id", "answer").text
    assert NASTY in browser.find_element("id", "peak-table").text
    assert "y<!--" in browser.find_element("id", "peak-table").text
    assert browser.execute_script("return window.gradmemReport.data.storages.name").count(NASTY) == 1


def test_scaled_scenario_page(browser, tmp_path):
    out = tmp_path / "mlp"
    run_cli("profile", SCENARIOS / "mlp.py", "-p", "batch=512", "-p", "width=256", "-p", "depth=3",
            "-p", "features=64", "-o", out, "-q", check=True)
    open_page(browser, out / "report.html")
    assert_clean_offline(browser, out / "report.html")
    assert painted_pixels(browser) > 10_000
    assert len(browser.find_elements("css selector", "#nodes-table tbody tr")) == len(pd.read_csv(out / "nodes.csv"))
    screenshot(browser, "mlp.png")


@pytest.mark.slow
def test_million_event_trace_page_is_small_and_opens(browser, tmp_path):
    trace = big_trace(1_000_000)
    assert len(trace.events) >= 1_000_000
    analysis = analyze(trace)
    write_reports(analysis, tmp_path / "big", formats=("html",))
    page = tmp_path / "big" / "report.html"
    size = page.stat().st_size
    assert size < 10_000_000, f"report.html is {size / 1e6:.1f} MB"
    seconds = open_page(browser, page)
    assert seconds < 10, f"the page took {seconds:.1f} s to load"
    assert_clean_offline(browser, page)
    assert painted_pixels(browser) > 10_000
    assert browser.execute_script("return Math.max(...window.gradmemReport.data.memory.hi)") == analysis.summary["peak_bytes"]
    assert "left out" in browser.find_element("id", "lifetimes-note").text
    screenshot(browser, "synthetic_1m.png")
    print(f"\n1M events: report.html {size / 1e6:.2f} MB, loaded in {seconds:.2f} s")
