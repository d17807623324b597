"""Stage 2 · the sliding-window sampler through its API (/sample_windows)."""
import math

import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError

from llm_core.tokenizers import gpt2_tokenizer
from tabs import sampler as S
from tabs.common import MAX_UPLOAD_BYTES

TEXT = ("Windows slide over a river of tokens. Each window feeds the model a few tokens, "
        "and the model guesses what comes next, one position at a time. With a small stride "
        "the windows overlap; with a large one they leave gaps between them.")


def sample(client, text=TEXT, max_length=4, stride=1, batch_size=2, shuffle=False, seed=123,
           drop_last=True, window=0, batch=0, source=S.SRC_TEXT, upload=None, sample_name=S.SAMPLES[0],
           tokenizer=S.TOK_GPT2):
    return client.predict(source, text, upload, sample_name, tokenizer, max_length, stride, batch_size,
                          shuffle, seed, drop_last, window, batch, api_name="/sample_windows")


def gpt2_ids(text):
    return gpt2_tokenizer().encode(text, allow_special=True)


@pytest.mark.parametrize("max_length,stride", [(4, 1), (4, 4), (5, 7), (8, 3)])
def test_windows_follow_the_books_definition(client, max_length, stride):
    summary, stream, pairs, batch, table, data = sample(client, max_length=max_length, stride=stride)
    ids = gpt2_ids(TEXT)
    n = len(ids)
    assert data["n_tokens"] == n
    assert data["starts"] == list(range(0, n - max_length, stride))
    assert data["num_windows"] == len(range(0, n - max_length, stride))
    for w in data["windows"]:
        s = w["start"]
        assert w["input_ids"] == ids[s:s + max_length]
        assert w["target_ids"] == ids[s + 1:s + max_length + 1]      # shifted by one
        assert w["target_ids"][:-1] == w["input_ids"][1:]
    # The formula is shown with the numbers filled in, and its result.
    assert f"⌈({n} − {max_length}) / {stride}⌉" in summary
    assert f"**{data['num_windows']}**" in summary
    assert len(table["data"]) == min(data["num_windows"], S.MAX_TABLE_ROWS)


def test_books_numbers_on_the_verdicts_first_words(client):
    # The book: The Verdict, batch 1, max_length 4, stride 1 -> first input/target below;
    # with stride 4 (no overlap) the first rows are the consecutive 4-token blocks.
    opening = "I HAD always thought Jack Gisburn rather a cheap genius"
    *_, data = sample(client, text=opening, max_length=4, stride=1, batch_size=1)
    assert data["batch"]["inputs"] == [[40, 367, 2885, 1464]]
    assert data["batch"]["targets"] == [[367, 2885, 1464, 1807]]
    *_, data = sample(client, text=opening, max_length=4, stride=4, batch_size=3)
    assert data["batch"]["inputs"] == [[40, 367, 2885, 1464], [1807, 3619, 402, 271], [10899, 2138, 257, 7026]]


def test_next_token_pairs_of_the_chosen_window(client):
    *_, pairs_html, _, _, data = sample(client, max_length=6, stride=2, window=3)
    w = data["windows"][3]
    assert data["window"]["index"] == 3
    assert [p["context"] for p in data["window"]["pairs"]] == [w["input_ids"][:k] for k in range(1, 7)]
    assert [p["desired"] for p in data["window"]["pairs"]] == w["target_ids"]
    assert "Window 3" in pairs_html and "----&gt;" in pairs_html


@pytest.mark.parametrize("drop_last", [True, False])
def test_batch_counts_and_shapes(client, drop_last):
    *_, batch_code, _, data = sample(client, max_length=5, stride=3, batch_size=4, drop_last=drop_last, batch=1)
    n_windows = data["num_windows"]
    expected = n_windows // 4 if drop_last else math.ceil(n_windows / 4)
    assert data["num_batches"] == expected
    b = data["batch"]
    assert b["inputs_shape"] == [4, 5] and b["targets_shape"] == [4, 5]
    assert "torch.Size([4, 5])" in batch_code
    # Without shuffling, batch 1 holds windows 4..7, exactly as the dataset has them.
    assert b["window_indices"] == [4, 5, 6, 7]
    windows = {w["index"]: w for w in data["windows"]}
    assert b["inputs"] == [windows[i]["input_ids"] for i in b["window_indices"]]
    assert b["targets"] == [windows[i]["target_ids"] for i in b["window_indices"]]


def test_last_partial_batch_without_drop_last(client):
    *_, data = sample(client, max_length=4, stride=4, batch_size=5, drop_last=False, batch=999)
    n_windows = data["num_windows"]
    rest = n_windows - (data["num_batches"] - 1) * 5
    assert data["batch"]["index"] == data["num_batches"] - 1      # clamped to the last batch, with a note
    assert data["batch"]["inputs_shape"] == [rest, 4]
    assert any("no batch 999" in n for n in data["notices"])


def test_shuffle_is_seeded(client):
    first = sample(client, max_length=4, stride=2, batch_size=6, shuffle=True, seed=7)[-1]["batch"]
    again = sample(client, max_length=4, stride=2, batch_size=6, shuffle=True, seed=7)[-1]["batch"]
    other = sample(client, max_length=4, stride=2, batch_size=6, shuffle=True, seed=8)[-1]["batch"]
    assert first == again
    assert first["window_indices"] != other["window_indices"]
    assert first["window_indices"] != list(range(6))
    # Shuffling reorders windows; each row is still one of the dataset's windows.
    ids = gpt2_ids(TEXT)
    for row, start in zip(first["inputs"], first["starts"]):
        assert row == ids[start:start + 4]


def test_stride_larger_than_max_length_skips_tokens(client):
    summary, stream, *_, data = sample(client, max_length=3, stride=6)
    assert data["tokens_never_seen"] > 0
    assert "never an input" in summary
    assert "smp-skip" in stream


def test_text_shorter_than_a_window_warns(client):
    summary, stream, pairs, batch, table, data = sample(client, text="Too short.", max_length=16)
    assert data["num_windows"] == 0 and data["batch"] is None
    assert any("too short" in w for w in data["warnings"])
    assert "Warning" in summary and "No windows" in pairs
    assert table["data"] == [] or table["data"] == [[""] * 6] or not any(any(r) for r in table["data"])


def test_exactly_max_length_plus_one_tokens_gives_one_window(client):
    text = "I HAD always thought"          # 5 GPT-2 tokens: I, H, AD, always, thought
    *_, data = sample(client, text=text, max_length=4, stride=1, batch_size=1)
    assert data["num_windows"] == 1
    *_, data = sample(client, text=text, max_length=5, stride=1, batch_size=1)
    assert data["num_windows"] == 0


def test_max_length_beyond_the_models_context_warns(client):
    *_, data = sample(client, max_length=S.MAX_LENGTH_LIMIT)
    assert any("larger than the active model's context" in w for w in data["warnings"])


def test_active_models_tokenizer(client):
    *_, data = sample(client, tokenizer=S.TOK_ACTIVE, max_length=4, stride=4)
    assert data["n_tokens"] > 0 and data["num_windows"] > 0
    assert data["starts"] == list(range(0, data["n_tokens"] - 4, 4))


def test_built_in_sample(client):
    summary, *_, data = sample(client, source=S.SRC_SAMPLE, text="", max_length=8, stride=4)
    assert data["n_characters"] > 500 and data["num_windows"] > 50
    assert "built-in sample" in summary


def test_joined_sample_has_endoftext_windows(client):
    *_, data = sample(client, source=S.SRC_SAMPLE, sample_name=S.SAMPLES[2], max_length=8, stride=8)
    assert any("<|endoftext|>" in n for n in data["notices"])


def test_the_verdict_offline_is_a_clear_message(client):
    # Tests run offline: unless the story is cached, the sample explains why it is unavailable.
    try:
        *_, data = sample(client, source=S.SRC_SAMPLE, sample_name=S.VERDICT_SAMPLE, max_length=4, stride=1,
                          batch_size=1)
    except AppError as exc:
        assert "Verdict" in str(exc) and "Choose another sample" in str(exc)
    else:
        assert data["batch"]["inputs"] == [[40, 367, 2885, 1464]]


def test_uploaded_text_file(client, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text(TEXT, encoding="utf-8")
    summary, *_, data = sample(client, source=S.SRC_UPLOAD, text="", upload=handle_file(str(path)),
                               max_length=4, stride=2)
    assert data["n_tokens"] == len(gpt2_ids(TEXT))
    assert "notes.txt" in summary


@pytest.mark.parametrize("payload,message", [
    (b"caf\xe9 au lait, latin-1 bytes", "not valid UTF-8"),
    (b"PK\x03\x04\x00\x00binary", "binary"),
    (b"   \n\t  ", "empty"),
    (b"x" * (MAX_UPLOAD_BYTES + 1), "limit"),
])
def test_bad_uploads_are_refused(client, tmp_path, payload, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(payload)
    with pytest.raises(AppError, match=message):
        sample(client, source=S.SRC_UPLOAD, text="", upload=handle_file(str(path)))


def test_special_tokens_and_odd_unicode_are_safe(client):
    text = ("<script>alert('x')</script> <|endoftext|> family 👩‍👩‍👧 e\u0301 \x00\x07 tab\there "
            "漢字 <b>bold</b> " * 3)
    summary, stream, pairs, batch, table, data = sample(client, text=text, max_length=6, stride=5, window=2)
    assert 50256 in [i for w in data["windows"] for i in w["input_ids"]]
    assert "<script" not in stream and "<script" not in pairs and "<b>" not in stream
    assert "&lt;" in stream
    assert "\ufffd" not in stream and "\ufffd" not in pairs     # partial UTF-8 shows as \xNN bytes
    assert any("<|endoftext|>" in n for n in data["notices"])


@pytest.mark.parametrize("kwargs,message", [
    (dict(text=""), "empty"),
    (dict(text="   \n "), "empty"),
    (dict(text="a" * (200_001)), "limit"),
    (dict(text="word " * 210_000), "limit"),        # about 1 MB
    (dict(stride=0), "stride must be at least 1"),
    (dict(stride=-3), "stride must be at least 1"),
    (dict(max_length=0), "max_length must be between"),
    (dict(max_length=S.MAX_LENGTH_LIMIT + 1), "max_length must be between"),
    (dict(batch_size=0), "batch_size must be between"),
    (dict(batch_size=10_000), "batch_size must be between"),
    (dict(seed=-1), "seed must be between"),
    (dict(window=-1), "window to inspect"),
    (dict(batch=-2), "batch to show"),
    (dict(source="From the moon"), "not in the list of choices"),
    (dict(tokenizer="made-up"), "not in the list of choices"),
    (dict(source=S.SRC_SAMPLE, sample_name="nope"), "not in the list of choices"),
    (dict(source=S.SRC_UPLOAD, text=""), "No file uploaded"),
])
def test_bad_input_is_a_clear_error(client, kwargs, message):
    with pytest.raises(AppError, match=message):
        sample(client, **kwargs)


def test_app_still_answers_after_errors(client):
    with pytest.raises(AppError):
        sample(client, stride=0)
    *_, data = sample(client)
    assert data["num_windows"] > 0
