"""Export (Hugging Face format) and Push to the Hub in a browser: Pretrain and Fine-tune."""
from tests.conftest import open_tab

ACCORDION = "Export (Hugging Face format) and push to the Hub"


def _open_export(page, tab_id: str):
    page.locator(f"#{tab_id}").get_by_text(ACCORDION).click()


def _export_then_push_offline(page, prefix: str):
    page.locator(f"#{prefix}-export").click()
    page.wait_for_function(
        f"() => document.querySelector('#{prefix}-export-out').innerText.includes('Exported')", timeout=60_000)
    assert ".zip" in page.locator(f"#{prefix}-export-file").inner_text()
    page.locator(f"#{prefix}-push-repo").locator("input, textarea").first.fill("someone/my-model")
    page.locator(f"#{prefix}-push-token").locator("input, textarea").first.fill("hf_not_a_real_token")
    page.locator(f"#{prefix}-push").click()
    page.wait_for_function(
        f"() => document.querySelector('#{prefix}-push-out').innerText.includes('cannot be reached')",
        timeout=60_000)
    assert "Not pushed" in page.locator(f"#{prefix}-push-out").inner_text()


def test_pretrain_export_and_push_controls(page):
    open_tab(page, "tab-pretrain")
    _open_export(page, "tab-pretrain")
    page.locator("#pt-export").click()  # nothing trained in this session yet: a clear message
    page.get_by_text("train one first").first.wait_for(timeout=30_000)
    page.locator("#pt-corpus").get_by_role("radio", name="Paste text").check()
    page.locator("#pt-pasted textarea").fill("The cat sat on the mat and looked at the hat. " * 150)
    page.locator("#pt-tokenizer").get_by_role("radio", name="GPT-2 BPE (50,257 tokens)").check()
    page.locator("#pt-steps input").fill("4")
    page.locator("#pt-eval input").fill("2")
    page.locator("#pt-start").click()
    page.wait_for_function(
        "() => document.querySelector('#pt-status').innerText.includes('finished')", timeout=90_000)
    _export_then_push_offline(page, "pt")


def test_finetune_export_and_push_controls(page):
    open_tab(page, "tab-finetune")
    page.locator("#ft-steps input").fill("2")
    page.locator("#ft-eval input").fill("1")
    page.locator("#ft-start").click()
    page.wait_for_function(
        "() => document.querySelector('#ft-status').innerText.includes('finished')", timeout=120_000)
    _open_export(page, "tab-finetune")
    _export_then_push_offline(page, "ft")
