"""The per-process trace cache and the per-tokenizer default examples."""
import gc

import torch

from llm_core import GPTConfig, build_untrained, load_model
from llm_core.examples import pick_example, single_token_words, whole_word_share
from llm_core.trace_cache import TraceCache, nbytes

CFG = GPTConfig(vocab_size=97, context_length=24, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.0)


def test_a_hit_returns_the_stored_value_without_computing():
    cache, model, calls = TraceCache(), build_untrained(CFG), []

    def compute():
        calls.append(1)
        return model.run_with_trace(torch.tensor([[1, 2, 3]]))
    first = cache.get_or_compute("m", model, [1, 2, 3], "trace", compute)
    again = cache.get_or_compute("m", model, [1, 2, 3], "trace", compute)
    assert again is first and len(calls) == 1 and cache.hits == 1
    cache.get_or_compute("m", model, [1, 2, 4], "trace", compute)      # other ids: a miss
    cache.get_or_compute("m", model, [1, 2, 3], "lens", compute)       # other kind: a miss
    assert len(calls) == 3


def test_another_model_object_under_the_same_name_never_gets_an_old_trace():
    cache = TraceCache()
    a, b = build_untrained(CFG, seed=1), build_untrained(CFG, seed=2)
    ta = cache.get_or_compute("m", a, [5], "t", lambda: "from a")
    tb = cache.get_or_compute("m", b, [5], "t", lambda: "from b")
    assert (ta, tb) == ("from a", "from b")


def test_a_dead_model_at_a_reused_address_is_a_miss():
    cache = TraceCache()
    a = build_untrained(CFG, seed=1)
    cache.get_or_compute("m", a, [5], "t", lambda: "old")
    key = next(iter(cache._items))
    ref, value, size = cache._items[key]
    del a
    gc.collect()
    b = build_untrained(CFG, seed=2)
    cache._items[(key[0], key[1], id(b), key[3])] = (ref, value, size)   # as if b sat at a's address
    assert cache.get_or_compute("m", b, [5], "t", lambda: "new") == "new"


def test_bounded_by_entries_and_bytes_least_recent_first():
    model = build_untrained(CFG)
    cache = TraceCache(max_entries=2, max_bytes=10_000)
    for i in range(3):
        cache.get_or_compute("m", model, [i], "t", lambda: torch.zeros(10))
    assert len(cache) == 2
    cache.get_or_compute("m", model, [9], "t", lambda: torch.zeros(2_500))  # 10 kB: pushes the others out
    assert len(cache) == 1 and cache.bytes == 10_000
    big = cache.get_or_compute("m", model, [10], "t", lambda: torch.zeros(5_000))  # over the budget: not kept
    assert big.numel() == 5_000 and len(cache) == 1


def test_nbytes_counts_tensors_in_containers():
    assert nbytes({"a": torch.zeros(3), "b": [torch.zeros(2, dtype=torch.float64)]}) == 12 + 16


def test_default_examples_use_words_the_tokenizer_keeps_whole():
    tok = load_model("pydoc-gpt").tokenizer      # the shipped 4,096-token BPE
    assert len(tok.encode(" cat")) == 2            # the example: ' c' + 'at'
    assert whole_word_share(tok, "The list is a list") == 1.0
    assert whole_word_share(tok, "The cat sat") < 1.0
    assert pick_example(tok, ["The cat sat on the mat", "The list is a list"]) == "The list is a list"
    assert single_token_words(tok, ["cat", "list", "red", "file"]) == ["list", "file"]
