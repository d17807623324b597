"""Sliding windows: the book's GPTDatasetV1 / create_dataloader_v1 rules on a text of our own."""
import json
from pathlib import Path

import pytest
import torch

from llm_core.data import GPTDatasetV1, create_dataloader_v1, num_batches, num_windows, window_starts
from llm_core.tokenizers import gpt2_tokenizer

DATA = Path(__file__).resolve().parent.parent / "data"
TEXT = ("A list is a mutable sequence. A tuple is an immutable sequence. "
        "Dictionaries map keys to values, and sets hold unique items. ") * 3


@pytest.fixture(scope="module")
def tok():
    return gpt2_tokenizer()


def test_window_starts_follow_the_books_range():
    assert list(window_starts(10, 4, 1)) == [0, 1, 2, 3, 4, 5]
    assert list(window_starts(10, 4, 4)) == [0, 4]
    assert list(window_starts(13, 4, 4)) == [0, 4, 8]  # 8 + 4 = 12 < 13 leaves room for the target
    assert list(window_starts(12, 4, 4)) == [0, 4]      # a window at 8 would have no last target
    assert num_windows(4, 4, 1) == 0 and num_windows(0, 4, 1) == 0
    with pytest.raises(ValueError):
        window_starts(10, 0, 1)
    with pytest.raises(ValueError):
        window_starts(10, 4, 0)


def test_num_batches_drop_last():
    assert num_windows(100, 4, 4) == 24
    assert num_batches(100, 4, 4, batch_size=5) == 4
    assert num_batches(100, 4, 4, batch_size=5, drop_last=False) == 5


def test_dataset_inputs_and_targets_are_shifted_by_one(tok):
    ids = tok.encode(TEXT)
    ds = GPTDatasetV1(TEXT, tok, max_length=4, stride=1)
    assert len(ds) == len(ids) - 4
    x, y = ds[0]
    assert x.tolist() == ids[0:4] and y.tolist() == ids[1:5]
    x, y = ds[len(ds) - 1]
    assert y.tolist() == ids[-4:]  # the last target ends at the last token


def test_loader_without_overlap_matches_the_token_stream(tok):
    ids = tok.encode(TEXT)
    loader = create_dataloader_v1(TEXT, batch_size=8, max_length=4, stride=4, shuffle=False, tokenizer=tok)
    inputs, targets = next(iter(loader))
    assert inputs.shape == targets.shape == (8, 4)
    for row in range(8):
        assert inputs[row].tolist() == ids[4 * row:4 * row + 4]
        assert targets[row].tolist() == ids[4 * row + 1:4 * row + 5]
    assert len(loader) == num_batches(len(ids), 4, 4, 8)


def test_default_tokenizer_is_gpt2_and_special_token_is_allowed(tok):
    text = "first document<|endoftext|>second document and some more words here"
    loader = create_dataloader_v1(text, batch_size=1, max_length=4, stride=1, shuffle=False)
    all_ids = loader.dataset.token_ids.tolist()
    assert tok.eot_id in all_ids
    assert all_ids == tok.encode(text, allow_special=True)


def test_seeded_shuffle_is_reproducible_and_leaves_global_rng_alone(tok):
    state = torch.get_rng_state()

    def order(seed):
        loader = create_dataloader_v1(TEXT, batch_size=2, max_length=4, stride=2, tokenizer=tok, seed=seed)
        return [x.tolist() for x, _ in loader]

    a, b, c = order(1), order(1), order(2)
    assert a == b
    assert a != c
    assert torch.equal(torch.get_rng_state(), state)


def test_unseeded_shuffle_after_manual_seed_gives_the_books_batch_order(tok):
    """create_dataloader_v1(shuffle=True) after torch.manual_seed(123) draws the batches in the order
    the book's own create_dataloader_v1 gave (tests/data/make_book_schedule.py)."""
    ref = json.loads((DATA / "book_schedule.json").read_text())["order_loader"]
    text = (DATA / "book_schedule_text.txt").read_text(encoding="utf-8")
    torch.manual_seed(123)
    loader = create_dataloader_v1(text, batch_size=ref["batch_size"], max_length=ref["max_length"],
                                  stride=ref["stride"], shuffle=True, tokenizer=tok)
    first_ids = [row[0] for x, _ in loader for row in x.tolist()]
    assert first_ids == ref["first_epoch_first_ids"]


def test_text_shorter_than_a_window_gives_no_batches(tok):
    loader = create_dataloader_v1("tiny text", batch_size=1, max_length=32, stride=32, tokenizer=tok)
    assert len(loader.dataset) == 0 and len(loader) == 0


def test_precomputed_ids_skip_encoding():
    ids = list(range(50))
    loader = create_dataloader_v1("", batch_size=3, max_length=5, stride=5, shuffle=False, token_ids=ids)
    x, y = next(iter(loader))
    assert x[1].tolist() == [5, 6, 7, 8, 9] and y[1].tolist() == [6, 7, 8, 9, 10]
