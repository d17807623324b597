"""Touching the inside in a real browser: knock out a head, click an attribution cell,
go from a generated token to the Attention tab, follow a link."""
import re
from urllib.parse import quote

from playwright.sync_api import expect

from llm_core import default_model_name, load_model
from tests.conftest import open_tab
from tests.e2e.test_generate import set_knobs

SLOW = 60_000


def test_knock_out_a_head_and_see_the_distribution_change(page):
    open_tab(page, "tab-attention")
    page.locator('#att-ko-grid td[data-layer="0"][data-head="1"]').click()
    expect(page.locator("#att-ko-heads textarea, #att-ko-heads input").first).to_have_value("0.1", timeout=SLOW)
    expect(page.locator('#att-ko-grid td.sel[data-layer="0"][data-head="1"]')).to_have_count(1)
    page.locator("#att-ko-run").click()
    md = page.locator("#att-ko-md")
    expect(md).to_contain_text("1 of", timeout=SLOW)
    expect(md).to_contain_text("heads knocked out")
    expect(page.locator("#att-ko-plot .js-plotly-plot .bars").first).to_be_attached(timeout=SLOW)
    # the two distributions differ: the summary reports a distance above zero
    tv = float(re.search(r"distributions: ([0-9.]+)", md.inner_text()).group(1))
    assert tv > 0
    # clicking the same cell again removes the head
    page.locator('#att-ko-grid td[data-layer="0"][data-head="1"]').click()
    expect(page.locator("#att-ko-heads textarea, #att-ko-heads input").first).to_have_value("", timeout=SLOW)


def test_click_an_attribution_cell_to_open_that_heads_pattern(page):
    open_tab(page, "tab-attention")
    page.locator("#att-attr-run").click()
    cfg = load_model(default_model_name()).config
    expect(page.locator("#att-attr-grid td[data-layer]")).to_have_count(cfg.n_layers * cfg.n_heads, timeout=SLOW)
    expect(page.locator("#att-dla .js-plotly-plot .trace").first).to_be_attached(timeout=SLOW)
    expect(page.locator("#att-attr-md")).to_contain_text("direct logit attribution")
    layer, head = cfg.n_layers - 1, cfg.n_heads - 1
    page.locator(f'#att-attr-grid td[data-layer="{layer}"][data-head="{head}"]').click()
    expect(page.locator("#att-layer input")).to_have_value(str(layer), timeout=SLOW)
    expect(page.locator("#att-head input")).to_have_value(str(head))
    expect(page.locator("#att-head-map")).to_contain_text(f"Layer {layer}, head {head}", timeout=SLOW)


def test_from_a_generated_token_to_attention_with_its_position_selected(page):
    open_tab(page, "tab-generate")
    set_knobs(page, "The list is", temperature="0", max_new="6")
    page.locator("#gen-run").click()
    expect(page.locator("#gen-stats")).to_contain_text("6 tokens", timeout=SLOW)
    page.locator('#gen-output-html [data-step="3"]').click()
    expect(page.locator("#gen-step-detail")).to_contain_text("Step 4", timeout=SLOW)
    page.locator("#gen-inspect-attention").click()
    expect(page.locator("#tab-attention")).to_be_visible(timeout=SLOW)

    tok = load_model(default_model_name()).tokenizer
    prompt = page.locator("#att-prompt textarea").input_value()
    assert prompt.startswith("The list is") and len(prompt) > len("The list is")
    n = len(tok.encode(prompt))
    assert n == len(tok.encode("The list is")) + 3      # the prompt and the three tokens before step 4
    expect(page.locator("#att-focus input")).to_have_value(str(n - 1))
    expect(page.locator("#att-notice")).to_contain_text(f"{n} tokens", timeout=SLOW)
    expect(page.locator("#att-head-view")).to_contain_text(f"(·{n - 1})", timeout=SLOW)
    # the same prompt waits in the Architecture tab
    open_tab(page, "tab-architecture")
    expect(page.locator("#arch-prompt textarea")).to_have_value(prompt)


LINK_TEXT = "The list is a list"


def open_link(page, url: str, tab: str, prefix: str) -> None:
    """Open a shared link; its tab shows, with the link's prompt in the prompt box."""
    page.goto(url)
    expect(page.locator(f"#tab-{tab}")).to_be_visible(timeout=SLOW)
    expect(page.locator(f"#{prefix}-prompt textarea")).to_have_value(LINK_TEXT, timeout=SLOW)


def test_a_link_opens_attention_with_the_prompt_and_selection(blank_page, app_url):
    page, text = blank_page, LINK_TEXT
    open_link(page, f"{app_url}?tab=attention&text={quote(text)}&layer=1&head=2&position=3", "attention", "att")
    expect(page.locator("#att-layer input")).to_have_value("1")
    expect(page.locator("#att-head input")).to_have_value("2")
    expect(page.locator("#att-head-map")).to_contain_text("Layer 1, head 2", timeout=SLOW)
    page.locator("#att-share").click()  # the view's own link carries the same selection back
    link = page.locator("#att-share-url textarea, #att-share-url input").first
    expect(link).to_have_value(re.compile(r"[?&]layer=1&head=2&position=3(&|$)"))
    assert f"text={quote(text).replace('%20', '+')}" in link.input_value() and "tab=attention" in link.input_value()


def test_attention_and_architecture_share_the_prompt(page):
    """Typed key by key, as a person does (the sync listens to the user's input events)."""
    open_tab(page, "tab-attention")
    page.locator("#att-prompt textarea").fill("")
    page.locator("#att-prompt textarea").press_sequentially("The list", delay=30)
    open_tab(page, "tab-architecture")
    expect(page.locator("#arch-prompt textarea")).to_have_value("The list", timeout=SLOW)
    page.locator("#arch-prompt textarea").press_sequentially(" is", delay=30)
    open_tab(page, "tab-attention")
    expect(page.locator("#att-prompt textarea")).to_have_value("The list is", timeout=SLOW)


def test_a_link_opens_architecture_with_the_prompt_and_position(blank_page, app_url):
    page, text = blank_page, LINK_TEXT
    open_link(page, f"{app_url}?tab=architecture&text={quote(text)}&layer=1&position=2", "architecture", "arch")
    expect(page.locator("#arch-position input")).to_have_value("2")
    expect(page.locator("#arch-lens-note")).to_contain_text("At position 2", timeout=SLOW)
