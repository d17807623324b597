"""Stage 5 · the architecture tab in a real browser: diagram, counts, logit lens."""
import re

from playwright.sync_api import expect

from tests.conftest import open_tab

# Forward passes share two busy cores with the rest of the suite: give results time to arrive.
WAIT = 45_000
# The diagram itself: while the tab loads, Gradio's spinner is another svg in the same box.
DIAGRAM = "#arch-diagram svg[aria-label^='GPT block diagram']"


def test_diagram_counts_and_a_prompt_through_the_model(page):
    open_tab(page, "tab-architecture")
    expect(page.locator(DIAGRAM)).to_be_visible(timeout=WAIT)
    expect(page.locator(DIAGRAM)).to_contain_text("TransformerBlock", timeout=WAIT)
    expect(page.locator(DIAGRAM)).to_contain_text("Masked multi-head attention", timeout=WAIT)
    expect(page.locator("#arch-config")).to_contain_text("n_layers", timeout=WAIT)
    expect(page.locator("#arch-params")).to_contain_text("output head", timeout=WAIT)
    expect(page.locator("#arch-gelu .js-plotly-plot")).to_be_visible(timeout=WAIT)

    page.locator("#arch-prompt textarea").fill("Every effort moves you <i>forward</i>")
    page.locator("#arch-run").click()
    expect(page.locator("#arch-lens .js-plotly-plot")).to_be_visible(timeout=WAIT)
    expect(page.locator("#arch-residual .js-plotly-plot")).to_be_visible(timeout=WAIT)
    expect(page.locator("#arch-lens-table")).to_contain_text("after layer 0", timeout=WAIT)
    expect(page.locator("#arch-ln-md")).to_contain_text("variance", timeout=WAIT)
    assert page.locator("#arch-lens-note i").count() == 0

    page.locator("#arch-prompt textarea").fill("")
    page.locator("#arch-run").click()
    expect(page.get_by_text(re.compile("prompt is empty")).first).to_be_visible(timeout=WAIT)


def test_gpt2_sizes_without_loading_weights(page):
    open_tab(page, "tab-architecture")
    page.locator("#arch-presets-box").get_by_text("Any GPT-2 size").click()
    expect(page.locator("#arch-preset-totals")).to_contain_text("163,009,536", timeout=WAIT)
    expect(page.locator("#arch-preset-totals")).to_contain_text("124,412,160", timeout=WAIT)
    page.locator("#arch-preset input").click()
    page.get_by_role("option", name=re.compile("GPT-2 XL")).click()
    expect(page.locator("#arch-preset-totals")).to_contain_text("1,637,792,000", timeout=WAIT)


def test_activation_patching_draws_the_layers_by_positions_map(page):
    open_tab(page, "tab-architecture")
    expect(page.locator("#arch-clean textarea, #arch-clean input").first).not_to_have_value("", timeout=WAIT)
    page.locator("#arch-patch-run").click()
    expect(page.locator("#arch-patch-map .js-plotly-plot .heatmaplayer .hm image").first).to_be_attached(timeout=WAIT)
    expect(page.locator("#arch-patch-md")).to_contain_text("strongest patch", timeout=WAIT)
    expect(page.locator("#arch-dla .js-plotly-plot")).to_be_attached(timeout=WAIT)
