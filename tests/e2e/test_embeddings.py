"""Stage 3 · the embeddings tab in a real browser: the map, neighbours, analogies, shapes."""
import re

import pytest

from playwright.sync_api import expect

from tests.conftest import open_tab

# Forward passes share two busy cores with the rest of the suite: give results time to arrive.
WAIT = 45_000


@pytest.mark.slow   # draws thousands of points without a GPU
def test_map_with_labelled_tokens_and_neighbours(page):
    open_tab(page, "tab-embeddings")
    # Useful on first load: the token map and the position plots are already drawn.
    expect(page.locator("#emb-scatter .js-plotly-plot")).to_be_visible(timeout=WAIT)
    expect(page.locator("#emb-pos-heat .js-plotly-plot")).to_be_visible(timeout=WAIT)
    expect(page.locator("#emb-in-shapes")).to_contain_text("[8, 4, 256]", timeout=WAIT)   # the book's example, quoted

    page.locator("#emb-words textarea").fill("#10, #11, #12, <b>not-a-token-zzqx</b>")
    page.locator("#emb-project").click()
    note = page.locator("#emb-project-note")
    expect(note).to_contain_text("#12", timeout=WAIT)
    expect(note).to_contain_text("Not single tokens", timeout=WAIT)
    assert page.locator("#emb-project-note b").count() == 0          # typed HTML is shown, not run
    expect(page.locator("#emb-scatter g.textpoint")).to_have_count(3, timeout=WAIT)  # the three tokens are labelled

    page.locator("#emb-query textarea").fill("#10")
    page.locator("#emb-nn-btn").click()
    first = page.locator("#emb-nn-table").get_by_role("row").nth(1).get_by_role("gridcell")
    expect(first.nth(2)).to_have_text("10", timeout=WAIT)      # the token itself comes first…
    expect(first.nth(3)).to_have_text("1", timeout=WAIT)       # …with cosine similarity 1
    expect(page.locator("#emb-nn-note")).to_contain_text("token #10", timeout=WAIT)

    # A word that BPE splits: a clear message with the pieces, and the app stays up.
    page.locator("#emb-query textarea").fill("Zqxjvwkzzqxjv")
    page.locator("#emb-nn-btn").click()
    expect(page.get_by_text(re.compile("not a single token")).first).to_be_visible(timeout=WAIT)
    page.locator("#emb-query textarea").fill("#11")
    page.locator("#emb-nn-btn").click()
    expect(page.locator("#emb-nn-note")).to_contain_text("token #11", timeout=WAIT)


@pytest.mark.slow
def test_three_d_and_analogy(page):
    open_tab(page, "tab-embeddings")
    page.locator("#emb-points input").fill("500")
    page.locator("#emb-dims label", has_text="3-D").click()
    expect(page.locator("#emb-project-note")).to_contain_text("500 of", timeout=WAIT)
    expect(page.locator("#emb-project-note")).to_contain_text("first 3 principal components")
    expect(page.locator("#emb-scatter .js-plotly-plot")).to_be_visible(timeout=WAIT)
    page.locator("#emb-an-a textarea").fill("#20")
    page.locator("#emb-an-b textarea").fill("#21")
    page.locator("#emb-an-c textarea").fill("#22")
    page.locator("#emb-an-btn").click()
    expect(page.locator("#emb-an-note")).to_contain_text("Be warned", timeout=WAIT)
    expect(page.locator("#emb-an-table").get_by_role("row")).to_have_count(11, timeout=WAIT)   # header + 10 results
