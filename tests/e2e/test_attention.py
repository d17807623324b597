"""The Attention tab in a real browser: the heatmaps are drawn, a new prompt redraws them,
bad input is explained, the book's toy example is there."""
from playwright.sync_api import expect

from llm_core import default_model_name, load_model
from llm_core.views.token_text import token_label
from tabs.attention import default_prompt
from tests.conftest import open_tab

SLOW = 30_000  # plotly loads lazily and the machine may be busy


def test_attention_tab_draws_the_heatmaps(page):
    open_tab(page, "tab-attention")
    for plot in ("att-head-map", "att-layer-grid", "att-mean-map", "att-head-view", "att-summary",
                 "att-math-scores"):
        expect(page.locator(f"#{plot} .js-plotly-plot")).to_be_visible(timeout=SLOW)
    # A heatmap layer labelled with the prompt's tokens (the app's default model tokenizes it).
    tok = load_model(default_model_name()).tokenizer
    first = token_label(tok, tok.encode(default_prompt(default_model_name()))[0])
    expect(page.locator("#att-head-map .heatmaplayer").first).to_be_attached()
    expect(page.locator("#att-head-map .ytick text").first).to_contain_text(first)
    expect(page.locator("#att-math")).to_contain_text("Causal mask")

    prompt = "Every effort moves you"
    page.locator("#att-prompt textarea").fill(prompt)
    page.locator("#att-run").click()
    expect(page.locator("#att-notice")).to_contain_text(f"{len(tok.encode(prompt))} tokens", timeout=SLOW)
    last = token_label(tok, tok.encode(prompt)[-1])
    expect(page.locator("#att-head-view")).to_contain_text(last)


def test_attention_tab_explains_bad_input_and_shows_the_toy_example(page):
    open_tab(page, "tab-attention")
    page.locator("#att-layer input").fill("99")
    page.locator("#att-run").click()
    expect(page.locator(".toast-body").filter(has_text="Layer must be between")).to_be_visible(timeout=SLOW)
    page.locator("#att-layer input").fill("0")
    page.locator("#att-prompt textarea").fill("   ")
    page.locator("#att-run").click()
    expect(page.locator(".toast-body").filter(has_text="prompt is empty")).to_be_visible(timeout=SLOW)

    # The book's toy example, in the same page (each new page costs a full app load).
    page.get_by_text("The book's first example").click()
    expect(page.locator("#att-toy")).to_contain_text("0.4419")
    page.locator("#att-toy-word").get_by_text("step", exact=True).click()
    expect(page.locator("#att-toy")).to_contain_text("step")
    expect(page.locator("#att-toy")).not_to_contain_text("0.4419")
