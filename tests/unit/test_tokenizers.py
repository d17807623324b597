"""Tokenizers: GPT-2 BPE offline and exact, the book's simple tokenizers."""
import pytest

from llm_core.tokenizers import (ENDOFTEXT, UNK, SimpleTokenizerV1, SimpleTokenizerV2, SpecialTokenError,
                                 available_tokenizers, build_vocab, gpt2_tokenizer, simple_split)

BOOK_TEXT = ("Hello, do you like tea? <|endoftext|> In the sunlit terraces of someunknownPlace.")


def test_gpt2_bpe_reproduces_the_books_ids():
    tok = gpt2_tokenizer()
    assert tok.n_vocab == 50257 and tok.eot_id == 50256
    ids = tok.encode(BOOK_TEXT)
    assert ids == [15496, 11, 466, 345, 588, 8887, 30, 220, 50256, 554, 262, 4252, 18250,
                   8812, 2114, 286, 617, 34680, 27271, 13]
    assert tok.decode(ids) == BOOK_TEXT


def test_gpt2_special_literal_refused_or_plain():
    tok = gpt2_tokenizer()
    with pytest.raises(SpecialTokenError):
        tok.encode(BOOK_TEXT, allow_special=False)
    plain = tok.encode_ordinary("<|endoftext|>")
    assert 50256 not in plain and tok.decode(plain) == "<|endoftext|>"


@pytest.mark.parametrize("text", ["👩‍👩‍👧 family", "東京タワー", "naïve café", "\x00\x07 ctrl", "a" * 5000])
def test_gpt2_roundtrip_odd_unicode(text):
    tok = gpt2_tokenizer()
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert b"".join(tok.token_bytes(i) for i in ids) == text.encode("utf-8")


def test_simple_split_and_vocab_are_the_books():
    assert simple_split('Hello, world. Is this-- a test?') == \
        ["Hello", ",", "world", ".", "Is", "this", "--", "a", "test", "?"]
    vocab = build_vocab('b a, "a"')
    assert vocab == {'"': 0, ",": 1, "a": 2, "b": 3}


def test_simple_v1_raises_on_unknown_and_roundtrips():
    text = '"It\'s the last he painted, you know," Mrs. Gisburn said with pardonable pride.'
    v1 = SimpleTokenizerV1(build_vocab(text))
    # The book's decode is lossy in exactly this way (the space after the apostrophe stays).
    assert v1.decode(v1.encode(text)) == '" It\' s the last he painted, you know," Mrs. Gisburn said with pardonable pride.'
    with pytest.raises(KeyError, match="Hello"):
        v1.encode("Hello, do you like tea?")


def test_simple_v2_unknowns_and_specials():
    source = "do you like tea ? In the sunlit terraces of the , ."
    v2 = SimpleTokenizerV2.from_text(source)
    n = len(set(simple_split(source)))
    assert v2.str_to_int[ENDOFTEXT] == n and v2.str_to_int[UNK] == n + 1
    text = "Hello, do you like tea? <|endoftext|> In the sunlit terraces of the palace."
    ids = v2.encode(text)
    assert ids[0] == v2.str_to_int[UNK] and v2.str_to_int[ENDOFTEXT] in ids
    assert v2.decode(ids) == "<|unk|>, do you like tea? <|endoftext|> In the sunlit terraces of the <|unk|>."


def test_simple_v2_decode_closes_up_colons_and_semicolons_as_the_book_v2_does():
    text = "He said: it was late; the light had gone, and so had he."
    v1, v2 = SimpleTokenizerV1(build_vocab(text)), SimpleTokenizerV2.from_text(text)
    assert v2.decode(v2.encode(text)) == text
    # V1 keeps the book's V1 pattern, which leaves the space before ':' and ';'
    assert v1.decode(v1.encode(text)) == "He said : it was late ; the light had gone, and so had he."


def test_optional_tokenizers_listed_with_reason():
    status = available_tokenizers()
    assert status["GPT-2 BPE (tiktoken gpt2)"] == ""
    for label in ("cl100k_base (GPT-3.5/4)", "o200k_base (GPT-4o)"):
        assert label in status  # listed even when unavailable; then the reason is non-empty
        if status[label]:
            assert "network" in status[label] or "cached" in status[label]
