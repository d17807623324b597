"""Byte-level BPE training: hand-checked merges, tiktoken parity, replaying merges, bad input."""
import json
import random

import pytest

from collections import Counter

from llm_core.bpe import MAX_MERGES, BPETrainResult, Merge, _bpe_chunk, _chunk_counts, train_bpe
from llm_core.tokenizers import ENDOFTEXT

ODD_TEXTS = [
    "👩‍👩‍👧‍👦 family, 👍🏽 thumbs",
    "東京タワーと大阪城 (CJK)",
    "naïve café, Åström, e\u0301 combining",
    "\x00\x07 control \t tab\r\n",
    "  leading and trailing spaces  \n\n",
    "=" * 3000 + "a" * 2000,
    "lone surrogate \ud800 here",
]


@pytest.fixture(scope="module")
def docs_text():
    """~120k characters of English with document markers, from this Python's pydoc topics."""
    from pydoc_data.topics import topics

    text = ENDOFTEXT.join(topics[k] for k in sorted(topics))
    return text[:120_000]


@pytest.fixture(scope="module")
def trained(docs_text):
    return train_bpe(docs_text, vocab_size=600)


def test_hand_worked_merges():
    # Chunks "aaab" and " aaab". Pairs: (a,a)x4, (a,b)x2, ( ,a)x1.
    # 1: a+a (4 occurrences, but "aaa" merges once per word -> 2 replaced).
    # 2: a tie at 2 between (aa,a) and (a,b); b"a" < b"aa", so a+b.  3: aa+ab.
    # Then only " "+"aaab" is left, seen once < min_count 2.
    result = train_bpe("aaab aaab", num_merges=10)
    assert result.merges == [
        Merge(256, b"a", b"a", b"aa", 4, 2),
        Merge(257, b"a", b"b", b"ab", 2, 2),
        Merge(258, b"aa", b"ab", b"aaab", 2, 2),
    ]
    assert "no pair occurs 2" in result.stopped_because
    assert result.training_token_counts() == [9, 7, 5, 3]
    assert result.segment("aaab aaab") == [b"aaab", b" ", b"aaab"]
    assert result.segment("aaab aaab", 1) == [b"aa", b"a", b"b", b" ", b"aa", b"a", b"b"]
    assert result.vocab_growth() == [257, 258, 259]

    more = train_bpe("aaab aaab", num_merges=10, min_count=1)
    assert [m.new for m in more.merges] == [b"aa", b"ab", b"aaab", b" aaab"]
    assert "no pair occurs 1" in more.stopped_because


def test_every_merge_is_the_most_frequent_pair_at_its_step(docs_text):
    # Greedy property, checked from scratch at each step: segment every distinct chunk with
    # the merges so far (reference rules) and count adjacent pairs over the whole text.
    text = docs_text[:10_000]
    result = train_bpe(text, num_merges=80)
    chunks, _ = _chunk_counts(text, result.pat_str)
    ranks = result.mergeable_ranks()
    for n, merge in enumerate(result.merges):
        pairs = Counter()
        for chunk, freq in chunks.items():
            parts = _bpe_chunk(chunk, ranks, 256 + n)
            for pair in zip(parts, parts[1:]):
                pairs[pair] += freq
        top = max(pairs.values())
        assert merge.count == pairs[(merge.left, merge.right)] == top, merge
        assert (merge.left, merge.right) == min(p for p, c in pairs.items() if c == top), merge


def test_vocab_size_counts_endoftext_and_ranks_are_consecutive(trained):
    assert trained.num_merges == 600 - 257
    assert [m.rank for m in trained.merges] == list(range(256, 256 + trained.num_merges))
    assert all(m.new == m.left + m.right for m in trained.merges)
    ranks = trained.mergeable_ranks()
    assert len(ranks) == len(set(ranks.values())) == 256 + trained.num_merges
    assert all(ranks[bytes([b])] == b for b in range(256))
    tok = trained.to_tokenizer("docs")
    assert tok.n_vocab == trained.n_vocab == 600 and tok.eot_id == 599
    counts = [m.count for m in trained.merges]
    assert counts[0] >= counts[-1] >= 2


def test_training_is_deterministic(docs_text, trained):
    again = train_bpe(docs_text, vocab_size=600)
    assert again.merges == trained.merges


def test_tiktoken_encoding_equals_reference_segmentation(docs_text, trained):
    sample = docs_text[:20_000]
    for n in (0, 1, 7, 50, 200, trained.num_merges):
        tok = trained.to_tokenizer("docs", n_merges=n)
        ids = tok.encode(sample)
        assert [tok.token_bytes(i) for i in ids] == trained.segment(sample, n)
        assert trained.segment_ids(sample, n) == ids


def test_replay_token_counts_match_training(docs_text, trained):
    # The trainer's own bookkeeping (tokens saved per merge) agrees with replaying merges.
    counts = trained.training_token_counts()
    for n in (0, 3, 100, trained.num_merges):
        assert trained.tokens_after(docs_text, n) == counts[n] + trained.n_specials
    assert trained.n_specials == docs_text.count(ENDOFTEXT) > 0
    assert counts == sorted(counts, reverse=True)


@pytest.mark.parametrize("text", ODD_TEXTS)
def test_odd_unicode_round_trips_and_matches_tiktoken(trained, text):
    tok = trained.to_tokenizer("docs")
    ids = tok.encode(text)
    pieces = trained.segment(text)
    assert [tok.token_bytes(i) for i in ids] == pieces
    if "\ud800" in text:  # unencodable: replaced by U+FFFD, as tiktoken does
        assert tok.decode(ids) == text.replace("\ud800", "\ufffd")
    else:
        assert tok.decode(ids) == text
        assert b"".join(pieces) == text.encode("utf-8")


def test_training_on_odd_unicode_round_trips():
    text = " ".join(ODD_TEXTS) * 3
    result = train_bpe(text, vocab_size=400)
    tok = result.to_tokenizer("odd")
    clean = text.replace("\ud800", "\ufffd")
    assert tok.decode(tok.encode(text)) == clean
    assert b"".join(result.segment(text)) == clean.encode("utf-8")


def test_endoftext_is_never_merged_across():
    text = ("the cat sat" + ENDOFTEXT) * 40 + "the end"
    result = train_bpe(text, num_merges=40, min_count=1)
    for m in result.merges:
        for piece in (b"<|", b"|>", b"endoftext", b"t<", b">t"):
            assert piece not in m.new, m
    tok = result.to_tokenizer("cats")
    ids = tok.encode(text)
    assert ids.count(tok.eot_id) == 40
    assert result.segment(text).count(ENDOFTEXT.encode()) == 40
    assert tok.decode(ids) == text


def test_save_and_load_merges(trained):
    saved = json.loads(json.dumps(trained.to_dict()))
    loaded = BPETrainResult.from_dict(saved)
    assert loaded.merges == trained.merges
    assert loaded.mergeable_ranks() == trained.mergeable_ranks()
    assert loaded.training_token_counts() == trained.training_token_counts()
    with pytest.raises(ValueError, match="bpe-merges"):
        BPETrainResult.from_dict({"kind": "something else"})


def test_progress_and_time_limit():
    calls = []
    result = train_bpe("abcabcabd " * 50, num_merges=5, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (result.num_merges, 5) and result.num_merges == 5
    stopped = train_bpe("abcabcabd " * 50, num_merges=5, time_limit_s=0)
    assert stopped.merges == [] and "time limit" in stopped.stopped_because


@pytest.mark.parametrize("kwargs, message", [
    (dict(text="", vocab_size=300), "empty"),
    (dict(text=ENDOFTEXT * 3, vocab_size=300), "empty"),
    (dict(text="abc", vocab_size=100), "at least 257"),
    (dict(text="abc", vocab_size=256), "at least 257"),
    (dict(text="abc", num_merges=-1), "0 or more"),
    (dict(text="abc", num_merges=MAX_MERGES + 1), "at most"),
    (dict(text="abc", vocab_size=300, num_merges=3), "not both"),
    (dict(text="abc"), "vocab_size"),
    (dict(text="abc", num_merges=3, min_count=0), "min_count"),
])
def test_bad_input_gives_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        train_bpe(**kwargs)


def test_bad_replay_input(trained):
    with pytest.raises(TypeError):
        train_bpe(b"bytes are not text", num_merges=3)
    with pytest.raises(ValueError, match="between 0 and"):
        trained.segment("hello", trained.num_merges + 1)
    with pytest.raises(ValueError, match="between 0 and"):
        trained.segment("hello", -1)
    assert trained.segment("", 5) == []


def test_merges_recovered_from_our_tokenizer_are_the_trained_ones(trained):
    recovered = BPETrainResult.from_tokenizer(trained.to_tokenizer("docs"))
    assert [(m.left, m.right) for m in recovered.merges] == [(m.left, m.right) for m in trained.merges]
    assert recovered.mergeable_ranks() == trained.mergeable_ranks()
    with pytest.raises(ValueError, match="unknown"):
        recovered.training_token_counts()


def test_gpt2_merges_replay_exactly():
    from llm_core.tokenizers import gpt2_tokenizer

    tok = gpt2_tokenizer()
    gpt2 = BPETrainResult.from_tokenizer(tok)
    assert gpt2.num_merges == 50_000 and gpt2.merges[0].new == b" t"
    text = "Hello, do you like tea? " + ENDOFTEXT + " In the sunlit terraces of someunknownPlace."
    assert gpt2.segment_ids(text) == tok.encode(text)
    assert gpt2.mergeable_ranks() == tok.encoding._mergeable_ranks
    assert gpt2.tokens_after(text, 0) == len(text.encode("utf-8")) - len(ENDOFTEXT) + 1
    saved = gpt2.to_dict()
    saved["merges"] = saved["merges"][:300]  # GPT-2's own byte order must survive saving
    restored = BPETrainResult.from_dict(json.loads(json.dumps(saved)))
    assert restored.segment_ids(text, 300) == gpt2.segment_ids(text, 300)


def test_one_long_chunk_trains_and_replays_exactly():
    # No spaces: the whole text is one pre-tokenised chunk (a DNA-like upload).
    rng = random.Random(0)
    text = "".join(rng.choice("acgt") for _ in range(6000))
    result = train_bpe(text, vocab_size=500)
    assert result.n_distinct_chunks == 1 and result.num_merges > 50
    tok = result.to_tokenizer("dna")
    ids = tok.encode(text)
    assert len(ids) == result.training_token_counts()[-1] == result.tokens_after(text)
    assert result.segment_ids(text) == ids and tok.decode(ids) == text


def test_custom_pattern_with_empty_matches():
    result = train_bpe("ab ab abc", num_merges=5, pat_str=r"\w*", min_count=1)
    assert [m.new for m in result.merges] == [b"ab", b"abc"]
    assert result.segment("ab abc") == [b"ab", b"abc"]
