"""Stage 2 · the sampler tab in a real browser: what a person sees."""
import re

from playwright.sync_api import expect

from llm_core.tokenizers import gpt2_tokenizer
from tests.conftest import open_tab

TEXT = "The cat sat on the mat. The dog sat on the log. <script>alert(1)</script> The end."


def test_opens_with_windows_drawn(page):
    open_tab(page, "tab-sampler")
    # Useful on first load: a built-in sample is already cut into windows.
    expect(page.locator("#smp-summary")).to_contain_text("Windows")
    expect(page.locator("#smp-stream [data-window]").first).to_be_visible()
    expect(page.locator("#smp-batch-code")).to_contain_text("torch.Size([4, 8])")


def test_set_max_length_and_stride_and_see_the_windows(page):
    open_tab(page, "tab-sampler")
    page.locator("#smp-source label", has_text="Type or paste").click()
    page.locator("#smp-text textarea").fill(TEXT)
    page.locator("#smp-max-length input").fill("4")
    page.locator("#smp-stride input").fill("4")
    page.locator("#smp-batch-size input").fill("2")
    page.locator("#smp-run").click()

    n = len(gpt2_tokenizer().encode(TEXT))
    n_windows = len(range(0, n - 4, 4))
    summary = page.locator("#smp-summary")
    expect(summary).to_contain_text(f"⌈({n} − 4) / 4⌉")
    expect(summary).to_contain_text(f"= {n_windows}")
    expect(summary).to_contain_text("tile")                      # stride = max_length: no overlap
    # Every window is drawn as a bar; the tokens are shown as text, never run as HTML.
    expect(page.locator("#smp-stream [data-window]")).to_have_count(n_windows)
    expect(page.locator("#smp-stream")).to_contain_text("script")
    assert page.locator("#tab-sampler script").count() == 0      # not in the table either
    expect(page.locator("#smp-batch-code")).to_contain_text("torch.Size([2, 4])")
    expect(page.locator("#smp-pairs")).to_contain_text("---->")
    expect(page.locator("#smp-table")).to_contain_text("[464, 3797, 3332, 319]")   # "The cat sat on"

    # Overlap: a smaller stride stacks the windows and says so.
    page.locator("#smp-stride input").fill("2")
    page.locator("#smp-stride input").press("Enter")
    expect(summary).to_contain_text(f"⌈({n} − 4) / 2⌉")
    expect(summary).to_contain_text("overlap")
    expect(page.locator("#smp-stream .smp-ov").first).to_be_visible()


def test_stride_zero_shows_a_clear_error(page):
    open_tab(page, "tab-sampler")
    page.locator("#smp-stride input").fill("0")
    page.locator("#smp-run").click()
    expect(page.get_by_text(re.compile("stride must be at least 1")).first).to_be_visible()
    # The app stays up: a valid stride works again.
    page.locator("#smp-stride input").fill("3")
    page.locator("#smp-run").click()
    expect(page.locator("#smp-summary")).to_contain_text("/ 3⌉")
