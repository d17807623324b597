"""The tokenizer tab in a real browser: what a person sees after typing, hovering, sharing."""
import re
from urllib.parse import urlencode

from playwright.sync_api import expect

from llm_core.tokenizers import gpt2_tokenizer
from tests.conftest import open_tab


def has_class(cls):
    return re.compile(rf"(^|\s){cls}(\s|$)")


def _type(page, text):
    box = page.locator("#tok-text textarea")
    box.fill(text)
    box.press("Tab")  # leave the box, as a person would (change fires either way)


def test_typing_shows_coloured_tokens_count_and_markup_as_text(page):
    open_tab(page, "tab-tokenizer")
    text = "Tokens, 12345 of them: <script>window.pwned = 1</script><b>not bold</b>"
    n = len(gpt2_tokenizer().encode(text))
    _type(page, text)
    view = page.locator("#tok-view-a")
    expect(view.locator(".tkv-count")).to_have_text(f"{n} tokens")
    tokens = view.locator(".tkv-text .tkv-t")
    expect(tokens).to_have_count(n)
    # Markup in the text is shown as text, never run or rendered.
    expect(view.locator(".tkv-text")).to_have_text(text)
    assert view.locator(".tkv-text script, .tkv-text b").count() == 0
    assert page.evaluate("window.pwned") is None
    colours = {tokens.nth(i).evaluate("e => getComputedStyle(e).backgroundColor") for i in range(3)}
    assert len(colours) == 3 and "rgba(0, 0, 0, 0)" not in colours  # neighbours differ, none blank
    expect(view.locator(".tkv-ids .tkv-id")).to_have_count(n)
    # Hovering a token lights up its id, and hovering an id lights up its token.
    tokens.nth(1).hover()
    expect(view.locator('.tkv-ids [data-i="1"]')).to_have_class(has_class("tkv-hl"))
    view.locator('.tkv-ids [data-i="2"]').hover()
    expect(tokens.nth(2)).to_have_class(has_class("tkv-hl"))
    expect(view.locator(".tkv-info")).to_contain_text("id ")


def test_link_prefills_the_tab_and_share_link_round_trips(blank_page, app_url):
    page = blank_page
    query = urlencode({"text": "Hello, do you like tea? In the sunlit terraces of the palace.",
                       "tokenizer": "simple", "compare": "gpt2", "ws": "markers"})
    page.goto(app_url + "?" + query)  # straight to the link, as a student following it would
    open_tab(page, "tab-tokenizer")
    expect(page.locator("#tok-text textarea")).to_have_value("Hello, do you like tea? In the sunlit terraces of the palace.")
    expect(page.locator("#tok-view-a .tkv-name")).to_contain_text("SimpleTokenizerV2")
    expect(page.locator("#tok-view-a .tkv-unk").first).to_contain_text("<|unk|>")
    expect(page.locator("#tok-view-b .tkv-name")).to_contain_text("GPT-2")
    expect(page.locator("#tok-view-b .tkv-text")).to_contain_text("␣do")  # markers show the space
    page.locator("#tok-share").click()
    link = page.locator("#tok-share-url textarea, #tok-share-url input").first
    expect(link).to_have_value(re.compile(r"[?&]tokenizer=simple(&|$)"))
    assert "compare=gpt2" in link.input_value() and "text=Hello" in link.input_value()


def test_bpe_replay_slider_changes_the_segmentation(page):
    open_tab(page, "tab-tokenizer")
    text = "the cat sat on the mat; the cat ate the rat. " * 6
    _type(page, text)
    merges = page.locator("#bpe-n input[type=number]")
    merges.fill("15")
    merges.press("Enter")
    page.locator("#bpe-train").click()
    expect(page.locator("#bpe-status")).to_contain_text("Learned 15 merges")
    view = page.locator("#bpe-view")
    expect(view.locator(".tkv-name")).to_contain_text("Merge 15")
    merged_count = view.locator(".tkv-text .tkv-t").count()
    assert merged_count < len(text)
    step = page.locator("#bpe-replay input[type=number]")
    step.fill("0")
    step.press("Enter")
    expect(view.locator(".tkv-name")).to_contain_text("no merges yet")
    expect(view.locator(".tkv-text .tkv-t")).to_have_count(len(text.encode()))
    table = page.locator("#bpe-table")
    expect(table).to_contain_text("256")   # the first merge's id …
    expect(table).to_contain_text("270")   # … and the 15th
