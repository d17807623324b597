"""Pretrain tab in a browser: start a short run, see the chart grow, stop it."""
from tests.conftest import open_tab


def test_train_live_and_stop(page):
    open_tab(page, "tab-pretrain")
    page.locator("#pt-corpus").get_by_role("radio", name="Paste text").check()
    page.locator("#pt-pasted textarea").fill("The cat sat on the mat and looked at the hat. " * 150)
    page.locator("#pt-tokenizer").get_by_role("radio", name="GPT-2 BPE (50,257 tokens)").check()
    page.locator("#pt-steps input").fill("2000")
    page.locator("#pt-eval input").fill("5")
    page.locator("#pt-start").click()
    page.wait_for_selector("#pt-plot .js-plotly-plot .trace", timeout=60_000)
    page.wait_for_function(
        "() => /step [1-9]/.test(document.querySelector('#pt-status').innerText)", timeout=60_000)
    page.locator("#pt-stop").click()
    page.wait_for_function(
        "() => document.querySelector('#pt-status').innerText.includes('stopped')", timeout=60_000)
    samples = page.locator("#pt-samples textarea").input_value()
    assert samples.startswith("[step ") and "The list" in samples  # the sample prompt, continued
