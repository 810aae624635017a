"""Headless Chromium for the tests of gradmem's pages: the driver fixture and the checks
every page must pass (no console error, no network request)."""
import json
import shutil
import time
from pathlib import Path

import pytest

from conftest import ROOT

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
    """Every request the log saw, less those of the browser's own pages (its new-tab page
    loads chrome:// resources at start-up, at times after a test's page began)."""
    urls = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg["method"] == "Network.requestWillBeSent" and \
                not msg["params"].get("documentURL", "").startswith(("chrome://", "chrome-untrusted://")):
            urls.append(msg["params"]["request"]["url"])
    return urls


def assert_clean_offline(driver, page: Path):
    assert console_errors(driver) == []
    urls = requests(driver)
    assert page.resolve().as_uri() in urls, f"the network log saw no request at all: {urls}"
    others = [u for u in urls if u != page.resolve().as_uri()]
    assert others == [], f"the page made requests besides itself: {others}"


def painted_pixels(driver, canvas_id: str = "chart") -> int:
    return driver.execute_script(
        "const c = document.getElementById(arguments[0]), d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n;", canvas_id)


def screenshot(driver, name: str):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / name))
