"""Fine-tune tab in a browser: start a short run on the built-in data, see the curve, stop, try it."""
from playwright.sync_api import expect

from tests.conftest import open_tab


def test_finetune_live_curve_stop_and_try(page):
    open_tab(page, "tab-finetune")
    expect(page.locator("#ft-counts")).to_contain_text("trainable of", timeout=30_000)  # counted on opening
    page.locator("#ft-steps input").fill("1000")
    page.locator("#ft-eval input").fill("3")
    page.locator("#ft-start").click()
    page.wait_for_selector("#ft-plot .js-plotly-plot .trace", timeout=90_000)
    page.wait_for_function(
        "() => /step [1-9]/.test(document.querySelector('#ft-status').innerText)", timeout=90_000)
    page.locator("#ft-stop").click()
    expect(page.locator("#ft-status")).to_contain_text("stopped", timeout=90_000)
    expect(page.locator("#ft-results")).to_contain_text("Accuracy", timeout=90_000)
    page.wait_for_selector("#ft-norms .js-plotly-plot .heatmaplayer .hm image", timeout=30_000)
    page.locator("#ft-try-cls").click()
    page.wait_for_function(
        "() => /function|class/.test(document.querySelector('#ft-try-probs').innerText)", timeout=30_000)


def test_switching_task_offers_instruction_data(page):
    open_tab(page, "tab-finetune")
    page.locator("#ft-task").get_by_role("radio", name="Instruction following (7.2)").check()
    page.wait_for_function(
        "() => document.querySelector('#ft-dataset input').value.includes('computed tasks')", timeout=30_000)
    assert page.locator("#ft-mask").is_visible()
    assert page.locator("#ft-try-ask").is_visible()


def test_lora_scaling_choice_updates_the_counts(page):
    from playwright.sync_api import expect

    open_tab(page, "tab-finetune")
    counts = page.locator("#ft-counts")
    expect(counts).to_contain_text("2,666,528")          # the book's appendix E count...
    expect(counts).to_contain_text("2,655,746")          # ...and this tab's at the same settings
    expect(counts).to_contain_text("multiplied by α/r = 2")   # rank 8, α 16, the default scaling
    page.locator("#ft-scaling").get_by_role("radio", name="book (alpha)").check()
    expect(counts).to_contain_text("multiplied by α = 16", timeout=30_000)
