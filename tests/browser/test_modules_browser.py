"""The module tree on report.html, in real headless Chromium, for a tiny TransformerEncoder."""
import pandas as pd
import pytest
import torch
from torch import nn

from browser import assert_clean_offline, browser, open_page, screenshot  # noqa: F401
from gradmem import Capture

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def model_page(tmp_path_factory):
    torch.manual_seed(0)
    model = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, dropout=0.1, batch_first=True), 2,
                                  enable_nested_tensor=False)
    x = torch.randn(2, 3, 8)
    with Capture("tiny_transformer", verify=False) as cap:
        model(x).sum().backward()
    out = tmp_path_factory.mktemp("html") / "tiny_transformer"
    cap.save(out)
    return out


def test_module_tree_and_links(browser, model_page):
    page = model_page / "report.html"
    open_page(browser, page)
    assert_clean_offline(browser, page)
    modules = pd.read_csv(model_page / "modules.csv")
    assert browser.find_element("id", "modules").is_displayed()
    rows = browser.find_elements("css selector", "#module-tree details:not(:first-child) > summary")
    assert len(rows) == len(modules) == 22
    answer = browser.find_element("id", "answer").text
    assert answer.startswith("The answer\nIn the training step, forward saved")
    assert "model.layers.1.self_attn" in answer and "Modules holding the most" in answer
    # a module link in the peak table opens the tree at that module
    link = browser.find_element("css selector", "#peak-table a.module-link")
    target = link.text
    link.click()
    shown = browser.find_element("css selector", "#module-tree summary.target")
    assert shown.is_displayed() and target.endswith(shown.find_element("tag name", "span").text)
    screenshot(browser, "tiny_transformer_modules.png")


def test_seed_page_has_no_module_section(browser, seed_reports):
    open_page(browser, seed_reports["seed_two_rows"] / "report.html")
    assert not browser.find_element("id", "modules").is_displayed()
