"""report.html in real headless Chromium: loads clean and offline, draws, hovers, highlights,
escapes, and copes with a 1,000,000-event trace. Screenshots go to tests/artifacts/."""
import json
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT, SCENARIOS, run_cli
from gradmem.analysis import analyze
from gradmem.render import write_reports
from gradmem.trace import read_trace, write_trace
from synthetic import big_trace

pytestmark = pytest.mark.browser
ARTIFACTS = ROOT / "tests" / "artifacts"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.skip("chromium or chromedriver not found on PATH")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    opts = Options()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run", "--window-size=1300,2400",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=opts, service=Service(driver_path))
    yield driver
    driver.quit()


def open_page(driver, path: Path) -> float:
    driver.get_log("browser"), driver.get_log("performance")   # start from empty logs
    start = time.monotonic()
    driver.get(path.resolve().as_uri())
    driver.execute_script("return document.readyState")
    return time.monotonic() - start


def console_errors(driver) -> list:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def requests(driver) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg["method"] == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    return urls


def assert_clean_offline(driver, page: Path):
    assert console_errors(driver) == []
    urls = requests(driver)
    assert page.resolve().as_uri() in urls, f"the network log saw no request at all: {urls}"
    assert [u for u in urls if u != page.resolve().as_uri()] == []


def painted_pixels(driver) -> int:
    return driver.execute_script(
        "const c = document.getElementById('chart'), d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n;")


def screenshot(driver, name: str):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / name))


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
