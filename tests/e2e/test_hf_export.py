"""Export (Hugging Face format) and Push to the Hub in a browser: Pretrain and Fine-tune."""
from playwright.sync_api import expect

from tests.conftest import open_tab, start_pretraining

ACCORDION = "Export (Hugging Face format) and push to the Hub"


def _open_export(page, tab_id: str):
    page.locator(f"#{tab_id}").get_by_text(ACCORDION).click()


def _export_then_push_offline(page, prefix: str):
    page.locator(f"#{prefix}-export").click()
    expect(page.locator(f"#{prefix}-export-out")).to_contain_text("Exported", timeout=60_000)
    assert ".zip" in page.locator(f"#{prefix}-export-file").inner_text()
    page.locator(f"#{prefix}-push-repo").locator("input, textarea").first.fill("someone/my-model")
    page.locator(f"#{prefix}-push-token").locator("input, textarea").first.fill("hf_not_a_real_token")
    page.locator(f"#{prefix}-push").click()
    expect(page.locator(f"#{prefix}-push-out")).to_contain_text("cannot be reached", timeout=60_000)
    assert "Not pushed" in page.locator(f"#{prefix}-push-out").inner_text()
    assert "/" not in page.locator(f"#{prefix}-push-out").inner_text().split("reached")[1]  # no server path


def test_pretrain_export_and_push_controls(page):
    open_tab(page, "tab-pretrain")
    _open_export(page, "tab-pretrain")
    page.locator("#pt-export").click()  # nothing trained in this session yet: a clear message
    page.get_by_text("train one first").first.wait_for(timeout=30_000)
    start_pretraining(page, steps=4, eval_every=2)
    expect(page.locator("#pt-status")).to_contain_text("finished", timeout=90_000)
    _export_then_push_offline(page, "pt")


def test_finetune_export_and_push_controls(page):
    open_tab(page, "tab-finetune")
    page.locator("#ft-steps input").fill("2")
    page.locator("#ft-eval input").fill("1")
    page.locator("#ft-start").click()
    expect(page.locator("#ft-status")).to_contain_text("finished", timeout=120_000)
    _open_export(page, "tab-finetune")
    _export_then_push_offline(page, "ft")
