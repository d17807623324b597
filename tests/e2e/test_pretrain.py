"""Pretrain tab in a browser: start a short run, see the chart grow, stop it."""
from playwright.sync_api import expect

from tests.conftest import open_tab, start_pretraining


def test_train_live_and_stop(page):
    open_tab(page, "tab-pretrain")
    start_pretraining(page, steps=2000, eval_every=5)
    page.wait_for_selector("#pt-plot .js-plotly-plot .trace", timeout=60_000)
    page.wait_for_function(
        "() => /step [1-9]/.test(document.querySelector('#pt-status').innerText)", timeout=60_000)
    page.locator("#pt-stop").click()
    expect(page.locator("#pt-status")).to_contain_text("stopped", timeout=60_000)
    samples = page.locator("#pt-samples textarea").input_value()
    assert samples.startswith("[step ") and "The list" in samples  # the sample prompt, continued
