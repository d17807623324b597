"""The tokenizer tab through its API: /tokenize and /train_bpe, good and bad input."""
import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError

from llm_core.tokenizers import CL100K, available_tokenizers
from tabs.common import MAX_TEXT_CHARS, MAX_UPLOAD_BYTES

BOOK_TEXT = "Hello, do you like tea? <|endoftext|> In the sunlit terraces of someunknownPlace."
BOOK_IDS = [15496, 11, 466, 345, 588, 8887, 30, 220, 50256, 554, 262, 4252, 18250, 8812, 2114, 286, 617,
            34680, 27271, 13]
VOCAB = "In the sunlit terraces of the villa, do you like tea?"


def tokenize(client, text, tok="gpt2", compare="none", special="allow", ws="typed",
             vocab_source="other", vocab_text=VOCAB):
    return client.predict(text, tok, compare, special, ws, vocab_source, vocab_text, api_name="/tokenize")


def test_book_sentence_gives_the_books_gpt2_ids(client):
    data, view, other, other_view, ids, other_ids = tokenize(client, BOOK_TEXT)
    assert data["ids"] == BOOK_IDS
    assert data["counts"]["tokens"] == 20 and data["round_trip_ok"] is True
    first, eot = data["tokens"][0], data["tokens"][8]
    assert first["id"] == 15496 and first["token"] == "Hello" and first["bytes"] == [0, 5]
    assert eot["id"] == 50256 and eot["special"] and eot["token"] == "<|endoftext|>"
    # byte spans tile the text
    assert [t["bytes"][0] for t in data["tokens"][1:]] == [t["bytes"][1] for t in data["tokens"][:-1]]
    assert data["tokens"][-1]["bytes"][1] == len(BOOK_TEXT.encode())
    assert "20</b> tokens" in view and other is None and other_ids == ""
    assert ids == ", ".join(map(str, BOOK_IDS))


def test_compare_with_the_books_simple_tokenizer(client):
    data, _, simple, simple_view, _, simple_ids = tokenize(client, BOOK_TEXT, compare="simple")
    assert data["ids"] == BOOK_IDS
    words = [t["token"] for t in simple["tokens"]]
    assert words[0] == "<|unk|>" and simple["tokens"][0]["word"] == "Hello"
    assert "<|endoftext|>" in words and simple["round_trip_ok"] is False
    assert "&lt;|unk|&gt;" in simple_view and "vs the left" in simple_view
    assert simple_ids == ", ".join(map(str, simple["ids"]))


def test_special_literal_modes(client):
    plain, view, *_ = tokenize(client, BOOK_TEXT, special="plain")
    assert 50256 not in plain["ids"] and plain["round_trip_ok"]
    assert "ordinary text" in view
    with pytest.raises(AppError, match="refuse"):
        tokenize(client, BOOK_TEXT, special="refuse")


def test_partial_utf8_and_markup_are_shown_safely(client):
    text = "你好 👨‍👩‍👧 <script>alert(1)</script>\u202e\x00"
    data, view, *_ = tokenize(client, text, ws="markers")
    assert data["round_trip_ok"] and data["counts"]["partial_tokens"] > 0
    partial = next(t for t in data["tokens"] if t["partial"])
    assert partial["token"].startswith("<0x") and partial["hex"]
    assert "<script" not in view and "&lt;/" in view and ">script<" in view  # GPT-2 splits " <", "script", ">"
    assert "\ufffd" not in view and "\u202e" not in view and "⟨U+202E⟩" in view


@pytest.mark.parametrize("text, message", [
    ("", "empty"),
    ("   \n ", "empty"),
    ("x" * 1_000_000, f"limit is {MAX_TEXT_CHARS:,}"),
])
def test_bad_text_gives_a_clear_message(client, text, message):
    with pytest.raises(AppError, match=message):
        tokenize(client, text)


def test_unpaired_surrogate_is_refused_by_the_handler():
    # HTTP clients cannot even send one (not UTF-8), so call the handler as the server would.
    import gradio as gr

    from tabs.tokenizer import tokenize_event
    with pytest.raises(gr.Error, match="surrogate U\\+D800"):
        tokenize_event("half a pair \ud800", "gpt2", "none", "allow", "typed", "other", VOCAB)


def test_bad_choices_give_a_clear_message(client):
    with pytest.raises(AppError):
        tokenize(client, "hi", tok="no-such-tokenizer")
    with pytest.raises(AppError, match="vocabulary text is empty"):
        tokenize(client, "hi", tok="simple", vocab_text="")
    with pytest.raises(AppError, match="No BPE trained"):
        tokenize(client, "hi", tok="bpe")


def test_unavailable_tokenizer_explains_itself(client):
    reason = available_tokenizers()[CL100K]
    if reason:
        with pytest.raises(AppError, match="not available"):
            tokenize(client, "hi", tok="cl100k")
    else:
        data, *_ = tokenize(client, "hi", tok="cl100k")
        assert data["ids"]


def test_train_bpe_records_merges(client):
    text = "the cat sat on the mat; the cat ate the rat. " * 8
    status, replay_step, table, _, view = client.predict("input", None, 12, text, api_name="/train_bpe")
    assert "Learned **12** merges" in status
    # the replay slider is re-ranged to the merges learned (an update, through the API)
    assert (replay_step["value"] if isinstance(replay_step, dict) else replay_step) == 12
    rows = table["data"]
    assert len(rows) == 12 and [r[0] for r in rows] == list(range(256, 268))
    counts = [r[4] for r in rows]
    assert counts[0] == max(counts)
    assert "after 12 merges" in view or "Merge 12" in view


def test_train_bpe_bad_input(client, tmp_path):
    with pytest.raises(AppError, match="No file uploaded"):
        client.predict("file", None, 10, "hi", api_name="/train_bpe")
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("café au lait".encode("latin-1"))
    with pytest.raises(AppError, match="not valid UTF-8"):
        client.predict("file", handle_file(str(bad)), 10, "hi", api_name="/train_bpe")
    binary = tmp_path / "image.txt"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    with pytest.raises(AppError, match="binary"):
        client.predict("file", handle_file(str(binary)), 10, "hi", api_name="/train_bpe")
    big = tmp_path / "big.txt"
    big.write_bytes(b"word " * (MAX_UPLOAD_BYTES // 5 + 1))
    with pytest.raises(AppError, match=f"limit is {MAX_UPLOAD_BYTES:,}"):
        client.predict("file", handle_file(str(big)), 10, "hi", api_name="/train_bpe")
    with pytest.raises(AppError, match="maximum"):
        client.predict("input", None, 10**6, "some text", api_name="/train_bpe")
    with pytest.raises(AppError, match="nothing to merge"):
        client.predict("input", None, 10, "abc", api_name="/train_bpe")
    with pytest.raises(AppError, match="empty"):
        client.predict("input", None, 10, "", api_name="/train_bpe")


def test_trained_bpe_becomes_a_tokenizer_for_this_session(app_url):
    from gradio_client import Client

    own = Client(app_url, verbose=False)  # a session of its own: the trained BPE lives in it
    text = "the cat sat on the mat; the cat ate the rat. " * 8
    own.predict("input", None, 30, text, api_name="/train_bpe")
    data, view, gpt2, *_ = tokenize(own, text, tok="bpe", compare="gpt2")
    n_merges = int(data["tokenizer"].split("(")[1].split(" merges")[0])
    assert 0 < n_merges <= 30 and data["round_trip_ok"]
    assert max(data["ids"]) < 256 + n_merges and data["counts"]["tokens"] < len(text.encode())
    assert gpt2["ids"][:3] == [1169, 3797, 3332]  # "the", " cat", " sat" through GPT-2, side by side
