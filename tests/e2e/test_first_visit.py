"""A first visit in a real browser, on a laptop (1440 × 900) and a phone (390 × 844): what shows
without scrolling, what every tab draws before anything is pressed, and errors that stay where
they belong."""
import json
import urllib.request

import pytest
from playwright.sync_api import expect

from tests.conftest import open_tab

LAPTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}
STAGES = ["tokenizer", "sampler", "embeddings", "attention", "architecture", "pretrain", "generate",
          "finetune", "chat"]
WAIT = 60_000

# Words of 4+ letters inside tables that the browser laid out on more than one line ("clas s").
SPLIT_WORDS_JS = """(root) => { const out = [];
  const walker = document.createTreeWalker(document.querySelector(root), NodeFilter.SHOW_TEXT);
  let n;
  while ((n = walker.nextNode())) {
    if (!n.parentElement.closest('table')) continue;
    const re = /[A-Za-z]{4,}/g; let m;
    while ((m = re.exec(n.textContent))) {
      const r = document.createRange(); r.setStart(n, m.index); r.setEnd(n, m.index + m[0].length);
      const lines = new Set([...r.getClientRects()].filter(x => x.width > 0).map(x => Math.round(x.top)));
      if (lines.size > 1) out.push(m[0]);
    }
  }
  return out; }"""

# What one plotly figure shows: its traces, and whether it is a note (no axes, only text).
PLOT_JS = """(el) => { const gd = el.querySelector('.js-plotly-plot');
  if (!gd) return null;
  const lay = gd.layout || {};
  const axes = Object.keys(lay).filter(k => /^[xy]axis\\d*$/.test(k));
  return {traces: (gd.data || []).length, notes: (lay.annotations || []).map(a => a.text),
          axes_hidden: axes.length > 0 && axes.every(k => lay[k].visible === false)}; }"""


@pytest.fixture
def open_page(browser, app_url):
    """open_page(viewport, query="") -> a loaded page of the app at that size."""
    contexts = []

    def _open(viewport, query=""):
        context = browser.new_context(viewport=viewport)
        contexts.append(context)
        pg = context.new_page()
        pg.set_default_timeout(30_000)
        pg.goto(app_url + query)
        pg.wait_for_selector("#model-summary", state="visible")
        return pg

    yield _open
    for context in contexts:
        context.close()


def _rect(page, selector):
    return page.locator(selector).first.evaluate(
        "e => { const r = e.getBoundingClientRect(); return {top: r.top, bottom: r.bottom, left: r.left, right: r.right}; }")


def test_header_is_compact_on_a_laptop(open_page):
    page = open_page(LAPTOP)
    tabs = _rect(page, "#stages")
    assert tabs["top"] <= 150, tabs  # was ~290 px of 900
    for stage in STAGES:
        expect(page.locator(f"#tab-{stage}-button")).to_be_visible()


def test_all_nine_numbered_tabs_are_reachable_on_a_phone(open_page):
    page = open_page(PHONE)
    for i, stage in enumerate(STAGES, start=1):
        button = page.locator(f"#tab-{stage}-button")
        expect(button).to_be_visible()
        assert button.inner_text().startswith(f"{i} · "), button.inner_text()
        box = button.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], (stage, box)
    expect(page.get_by_role("button", name="More tabs")).to_have_count(0)
    open_tab(page, "tab-chat")
    expect(page.locator("#chat-bot")).to_be_visible()


def test_chat_opens_on_the_conversation(open_page):
    page = open_page(LAPTOP)
    open_tab(page, "tab-chat")
    assert page.evaluate("window.scrollY") == 0
    bot, message, settings = _rect(page, "#chat-bot"), _rect(page, "#chat-message"), _rect(page, "#chat-settings")
    assert bot["top"] < message["top"] and message["bottom"] <= LAPTOP["height"], (bot, message)
    assert settings["left"] >= bot["right"], (bot, settings)  # the settings sit beside it

    # A compared answer appears under the conversation, in its column.
    page.locator("#chat-compare input").check()
    box = page.locator("#chat-max-new input[type=number]")
    box.fill("4")
    box.press("Enter")
    page.locator("#chat-message textarea").fill("Is the word a palindrome? Answer yes or no.")
    page.locator("#chat-message textarea").press("Enter")
    expect(page.locator("#chat-compare-out .chat-compare-col")).to_have_count(2, timeout=WAIT)
    expect(page.locator("#chat-message textarea")).to_be_enabled(timeout=WAIT)
    compared = _rect(page, "#chat-compare-out")
    assert compared["top"] >= _rect(page, "#chat-message")["bottom"], compared
    assert compared["left"] < bot["right"] and compared["right"] <= settings["left"], compared


def test_chat_settings_come_after_the_conversation_on_a_phone(open_page):
    page = open_page(PHONE)
    open_tab(page, "tab-chat")
    assert _rect(page, "#chat-settings")["top"] > _rect(page, "#chat-message")["bottom"]


def test_a_failed_save_leaves_the_header_alone(page):
    open_tab(page, "tab-pretrain")
    page.locator("#tab-pretrain").get_by_text("Save the trained model").click()
    page.locator("#pt-save-name textarea").fill("")
    page.locator("#pt-save").click()
    expect(page.locator(".toast-body").filter(has_text="Name the checkpoint")).to_be_visible(timeout=WAIT)
    picker = page.locator("#model-picker")
    expect(picker).not_to_contain_text("Error")
    expect(picker.locator("input")).to_be_editable()


def _plot_ids(app_url):
    config = json.loads(urllib.request.urlopen(app_url + "config", timeout=30).read())
    return [c["props"]["elem_id"] for c in config["components"]
            if c.get("type") == "plot" and c.get("props", {}).get("elem_id")]


def test_no_tab_opens_on_an_empty_axis(open_page, app_url):
    plot_ids = _plot_ids(app_url)
    assert len(plot_ids) > 10, plot_ids
    page = open_page(LAPTOP)
    seen = set()
    for stage in STAGES:
        open_tab(page, f"tab-{stage}")
        for elem_id in plot_ids:
            block = page.locator(f"#tab-{stage} #{elem_id}")
            if block.count() == 0 or not block.is_visible():
                continue  # in another tab, or in a closed accordion
            # Every plot block holds a figure (an empty gr.Plot shows only an icon)...
            expect(block.locator(".js-plotly-plot")).to_have_count(1, timeout=WAIT)
            shown = block.evaluate(PLOT_JS)
            # ...with data, or a note and no axes at all.
            assert shown["traces"] > 0 or (shown["notes"] and shown["axes_hidden"]), (stage, elem_id, shown)
            seen.add(elem_id)
    assert {"gen-step-chart", "gen-entropy", "bpe-growth", "emb-cmp-fig", "pt-plot", "ft-plot"} <= seen, seen


def test_clearing_the_tokenizer_text_is_a_note_not_an_error(page):
    open_tab(page, "tab-tokenizer")
    expect(page.locator("#tok-view-a .tkv-count")).to_be_visible()
    box = page.locator("#tok-text textarea")
    box.fill("")
    box.press("Tab")
    expect(page.locator("#tok-view-a")).to_contain_text("Type or paste some text", timeout=WAIT)
    expect(page.locator(".toast-body")).to_have_count(0)
    # Pressing Tokenize on nothing still says what to do.
    page.locator("#tok-go").click()
    expect(page.locator(".toast-body").filter(has_text="empty")).to_be_visible(timeout=WAIT)


def test_the_short_text_warning_shows_once(page):
    open_tab(page, "tab-sampler")
    page.locator("#smp-source label", has_text="Type or paste").click()
    page.locator("#smp-text textarea").fill("A short text.")
    page.locator("#smp-max-length input").fill("50")
    page.locator("#smp-run").click()  # leaving max_length and clicking Run: two events
    summary = page.locator("#smp-summary")
    expect(summary).to_contain_text("too short for max_length 50", timeout=WAIT)
    expect(page.locator("#smp-run")).to_be_enabled()
    assert summary.inner_text().count("too short") == 1
    expect(page.locator(".toast-body").filter(has_text="too short")).to_have_count(0)


def test_plots_follow_the_dark_theme(open_page):
    page = open_page(LAPTOP, "?__theme=dark")
    open_tab(page, "tab-architecture")
    svg = page.locator("#arch-gelu .main-svg").first
    expect(svg).to_be_visible(timeout=WAIT)
    assert svg.evaluate("e => getComputedStyle(e).backgroundColor") == "rgba(0, 0, 0, 0)"
    assert _brightness(page.locator("#arch-gelu .xtick text").first) > 150  # light text on the dark page
    open_tab(page, "tab-pretrain")
    note = page.locator("#pt-plot .annotation-text").first  # a note before the first run, light too
    expect(note).to_contain_text("Start training", timeout=WAIT)
    assert _brightness(note) > 150


def _brightness(locator) -> float:
    fill = locator.evaluate("e => getComputedStyle(e).fill")  # rgb(r, g, b)
    return sum(int(v) for v in fill[fill.index("(") + 1:fill.index(")")].split(",")[:3]) / 3


@pytest.mark.parametrize("viewport", [LAPTOP, PHONE], ids=["laptop", "phone"])
def test_table_columns_never_split_a_word(open_page, viewport):
    page = open_page(viewport)
    for stage, table in (("sampler", "#smp-table"), ("architecture", "#arch-params"), ("chat", "#chat-examples-good")):
        open_tab(page, f"tab-{stage}")
        expect(page.locator(f"{table} table").first).to_be_visible(timeout=WAIT)
        assert page.evaluate(SPLIT_WORDS_JS, f"#tab-{stage}") == [], stage
