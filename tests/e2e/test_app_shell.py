"""The header in a real browser: loading another model changes what every tab works on."""
from playwright.sync_api import expect

from tests.conftest import open_tab

WAIT = 45_000


def test_loading_a_model_reaches_the_tabs_and_clears_stale_answers(page):
    open_tab(page, "tab-embeddings")
    # The neighbour and analogy tables come filled for the start-up model (header + results).
    expect(page.locator("#emb-nn-note")).to_contain_text("is token #", timeout=WAIT)
    assert page.locator("#emb-nn-table").get_by_role("row").count() > 2

    picker = page.locator("#model-picker input")
    picker.fill("untrained:tiny")
    picker.press("Enter")
    page.locator("#model-load").click()
    expect(page.locator("#model-summary")).to_contain_text("untrained", timeout=WAIT)

    # Answers computed with the previous model are cleared, with the reason.
    expect(page.locator("#emb-nn-note")).to_contain_text("Model changed to", timeout=WAIT)
    expect(page.locator("#emb-an-note")).to_contain_text("Model changed to", timeout=WAIT)

    # Another tab now runs the new model: the architecture view shows its config.
    open_tab(page, "tab-architecture")
    expect(page.locator("#tab-architecture")).to_contain_text("untrained:tiny", timeout=WAIT)
