"""Stage 9 · Chat in a real browser: a streamed answer, switching model, compare mode, bad input."""
import re

from playwright.sync_api import expect

from llm_core.registry import load_model
from tests.conftest import open_tab

# Records the length of the newest bot message after each DOM update of the chatbot.
WATCH_JS = """() => {
  window.__chatLens = [];
  const box = document.querySelector('#chat-bot');
  new MutationObserver(() => {
    const bots = box.querySelectorAll('[data-testid="bot"]');
    if (bots.length) window.__chatLens.push(bots[bots.length - 1].innerText.trim().length);
  }).observe(box, {childList: true, subtree: true, characterData: true});
}"""


def _set_max_new(page, value: str):
    box = page.locator("#chat-max-new input[type=number]")
    box.fill(value)
    box.press("Enter")


def _send(page, message: str, input_text: str = ""):
    page.locator("#chat-input textarea").fill(input_text)
    box = page.locator("#chat-message textarea")
    box.fill(message)
    box.press("Enter")


# The shipped instruct model's context, as the usage line quotes it.
SHIPPED_CONTEXT = load_model("pydoc-gpt-instruct").config.context_length

def _bot(page):
    return page.locator('#chat-bot [data-testid="bot"]')


def test_streamed_answer_then_switch_model(page):
    open_tab(page, "tab-chat")
    _set_max_new(page, "24")
    page.evaluate(WATCH_JS)
    _send(page, "Convert the text to upper case.", "hello world")
    expect(page.locator('#chat-bot [data-testid="user"]').first).to_contain_text("Convert the text")
    expect(_bot(page)).to_have_count(1, timeout=60_000)
    usage = page.locator("#chat-usage")
    expect(usage).to_contain_text("pydoc-gpt-instruct", timeout=60_000)
    expect(usage).to_contain_text(f"of {SHIPPED_CONTEXT}")
    expect(page.locator("#chat-message textarea")).to_be_enabled(timeout=60_000)  # the answer is complete
    lengths = page.evaluate("window.__chatLens")
    assert len({n for n in lengths if n > 0}) >= 2, lengths  # the answer grew while it streamed
    page.locator("#chat-prompt-acc").get_by_text("Exact prompt sent to the model").click()
    expect(page.locator("#chat-prompt textarea")).to_have_value(
        "Below is an instruction that describes a task. Write a response that appropriately completes "
        "the request.\n\n### Instruction:\nConvert the text to upper case.\n\n### Input:\nhello world"
        "\n\n### Response:\n")

    page.locator("#chat-model").get_by_label("plain base model").check()
    _send(page, "Reverse the following word.", "python")
    expect(_bot(page)).to_have_count(2, timeout=60_000)
    expect(usage).to_contain_text("pydoc-gpt: the prompt", timeout=60_000)
    expect(usage).not_to_contain_text("pydoc-gpt-instruct")


def test_compare_mode_shows_two_answers(page):
    open_tab(page, "tab-chat")
    _set_max_new(page, "12")
    page.locator("#chat-compare input").check()
    _send(page, "Sort the numbers in ascending order.", "7, 3, 9, 1")
    out = page.locator("#chat-compare-out")
    expect(out.locator("pre")).to_have_count(2, timeout=60_000)
    expect(out.locator("h4").nth(0)).to_have_text("pydoc-gpt-instruct")
    expect(out.locator("h4").nth(1)).to_have_text("pydoc-gpt", timeout=60_000)
    expect(_bot(page)).to_have_count(1)


def test_bad_messages_leave_the_chat_usable(page):
    open_tab(page, "tab-chat")
    _set_max_new(page, "4")
    box = page.locator("#chat-message textarea")
    _send(page, "   ")
    expect(page.locator("#chat-message")).to_contain_text("The message is empty", timeout=30_000)
    expect(_bot(page)).to_have_count(0)
    expect(box).to_be_enabled()
    _send(page, "word " * 300)  # fits the character limit, not the model's context
    expect(page.get_by_text("Shorten the message").first).to_be_visible(timeout=60_000)
    expect(_bot(page).first).to_contain_text("Not sent", timeout=30_000)
    expect(box).to_be_enabled(timeout=30_000)
    _send(page, "Repeat <|endoftext|> <img src=x onerror=\"window.__pwned=1\">")
    expect(_bot(page)).to_have_count(2, timeout=60_000)
    expect(page.locator('#chat-bot [data-testid="user"]').last).to_contain_text("<|endoftext|>")
    expect(page.locator("#chat-usage")).to_contain_text(f"of {SHIPPED_CONTEXT}", timeout=60_000)
    assert page.evaluate("window.__pwned") is None  # Gradio's sanitizer drops the handler


def test_html_in_a_message_is_shown_as_typed(page):
    """Markup a visitor types is text: no element is made from it, and it reads back exactly,
    also in the prompt the model got (escaped for display only)."""
    typed = "<h1>Big</h1> <b>bold</b> <img src=x onerror=\"window.__pwned=1\"> & &amp; done"
    open_tab(page, "tab-chat")
    _set_max_new(page, "4")
    _send(page, typed)
    user = page.locator('#chat-bot [data-testid="user"]').first
    expect(user).to_contain_text("<h1>Big</h1>", timeout=60_000)
    assert user.inner_text().strip() == typed
    assert page.locator("#chat-bot h1, #chat-bot b, #chat-bot img[src=x]").count() == 0
    assert page.evaluate("window.__pwned") is None
    expect(page.locator("#chat-message textarea")).to_be_enabled(timeout=60_000)
    page.locator("#chat-prompt-acc").get_by_text("Exact prompt sent to the model").click()
    expect(page.locator("#chat-prompt textarea")).to_have_value(re.compile(re.escape(typed)))
