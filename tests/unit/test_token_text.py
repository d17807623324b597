"""One way to show a token or a text in every view (llm_core.views.token_text)."""
import pytest

from llm_core import gpt2_tokenizer
from llm_core.tokenizers import SimpleTokenizerV2
from llm_core.views.token_text import ids_text, readable, readable_parts, show_text, token_label


@pytest.fixture(scope="module")
def tok():
    return gpt2_tokenizer()


def test_readable_bytes():
    assert readable(b"\xe4\xbd") == "<0xE4><0xBD>"
    assert readable(" café".encode()) == " café"
    assert readable(b" \xf0\x9f") == " <0xF0><0x9F>"
    assert readable(b"a\xffb") == "a<0xFF>b"
    assert readable_parts(b"\xa0x") == [("bytes", b"\xa0"), ("text", "x")]


def test_show_text_marks_whitespace_and_invisible_characters():
    assert show_text("a b\tc\r\n") == "a␣b⇥c␍↵"
    assert show_text("a\nb", line_breaks=True) == "a↵\nb"
    assert show_text("a b\n", "typed") == "a b\n"
    # Zero-width joiner, right-to-left override and NUL never reach the page raw.
    assert show_text("x\u200dy\u202ez\x00", "typed") == "x⟨U+200D⟩y⟨U+202E⟩z⟨U+0000⟩"


def test_token_labels(tok):
    assert token_label(tok, tok.encode(" the")[0]) == "␣the"
    assert token_label(tok, tok.encode("\n")[0]) == "↵"
    first_byte_of_emoji = tok.encode("🙂")[0]
    assert tok.token_bytes(first_byte_of_emoji) != "🙂".encode()  # GPT-2 splits it over tokens
    assert token_label(tok, first_byte_of_emoji).startswith("<0xF0>")
    assert token_label(tok, 10**9) == f"#{10**9}"  # not a row the tokenizer can name
    simple = SimpleTokenizerV2.from_text("hello world")
    assert token_label(simple, simple.encode("world")[0]) == "world"


def test_ids_text_joins_bytes_before_showing_them(tok):
    ids = tok.encode(" a🙂")
    assert len(ids) > 2 and ids_text(tok, ids) == "␣a🙂"
    assert ids_text(tok, ids[:-1]).startswith("␣a<0xF0>")
