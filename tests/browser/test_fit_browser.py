"""fit.html in headless Chromium: offline, one dot per run, the budget, the answer and the
fitted line drawn, and a scenario name with markup shown as text (a file name cannot hold "/", so no closing tag)."""
import json
import shutil

from click.testing import CliRunner

from browser import ARTIFACTS, assert_clean_offline, browser, open_page, screenshot  # noqa: F401
from conftest import SCENARIOS
from gradmem.cli import main


def test_fit_page(browser, tmp_path):  # noqa: F811
    script = tmp_path / "lin<b>x&<i>.py"
    shutil.copy(SCENARIOS / "linear_mse.py", script)
    out = tmp_path / "fit"
    r = CliRunner().invoke(main, ["fit", str(script), "--param", "n", "--budget", "200kB", "-p", "d=16", "-o", str(out), "-q"])
    assert r.exit_code == 0, r.output
    page = out / "fit.html"
    open_page(browser, page)
    assert_clean_offline(browser, page)
    answer = json.loads((out / "fit.json").read_text())
    dots = browser.execute_script("return document.querySelectorAll('#fit-chart circle.run').length")
    assert dots == answer["runs"]
    assert browser.execute_script("return document.querySelectorAll('#fit-chart polyline.curve').length") == 1
    assert browser.execute_script("return document.querySelectorAll('#fit-chart line.budget, #fit-chart line.answer').length") == 2
    assert browser.execute_script("return document.querySelector('b, i') === null")
    assert "lin<b>x&<i>" in browser.find_element("tag name", "h1").text
    assert f"n={answer['answer']:,} fits in" in browser.find_element("id", "answer").text
    browser.set_window_size(1100, 1250)
    screenshot(browser, "fit-page.png")
    assert (ARTIFACTS / "fit-page.png").stat().st_size > 10_000
