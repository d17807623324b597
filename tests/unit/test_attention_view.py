"""Attention views: the traced weights, per-head statistics, the step-by-step maths, the toy example."""
import math

import numpy as np
import pytest
import torch

from llm_core import GPTConfig, build_untrained, gpt2_tokenizer
from llm_core.views.attention_view import (
    MATH_MAX_TOKENS, PromptError, attention_stack, attention_steps, attention_view, encode_prompt_keep_first, focus_window,
    head_statistics, pooled, strongest_heads, toy_self_attention, trace_prompt,
)

CFG = GPTConfig(vocab_size=50257, context_length=32, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.0)
PROMPT = "Every effort moves you forward, one small step at a time."


@pytest.fixture(scope="module")
def model():
    return build_untrained(CFG, seed=7)


@pytest.fixture(scope="module")
def tok():
    return gpt2_tokenizer()


@pytest.fixture(scope="module")
def att(model, tok):
    return trace_prompt(model, tok, PROMPT)


def test_traced_weights_are_causal_rows_of_probabilities(att):
    w = att.weights
    t = len(att.tokens.ids)
    assert w.shape == (CFG.n_layers, CFG.n_heads, t, t)
    assert torch.allclose(w.sum(-1), torch.ones(CFG.n_layers, CFG.n_heads, t), atol=1e-5)
    assert torch.all(w.triu(diagonal=1) == 0)
    assert torch.all(w[..., 0, 0] == 1)  # the first token can only look at itself


def test_traced_logits_equal_the_fast_path(model, att):
    ids = torch.tensor([att.tokens.ids])
    with torch.no_grad():
        fast = model(ids)
    assert torch.allclose(att.trace["logits"], fast, atol=1e-5)


def test_attention_stack_needs_weights():
    with pytest.raises(KeyError):
        attention_stack({"logits": torch.zeros(1, 2, 3)})


def test_prompt_is_capped_with_a_notice(tok):
    long = " one two three" * 40   # 120 tokens
    capped = encode_prompt_keep_first(tok, long, context_length=1024, cap=50)
    assert len(capped.ids) == 50 and capped.total == 120 and capped.truncated
    assert "display cap" in capped.notice() and "120" in capped.notice()
    by_context = encode_prompt_keep_first(tok, long, context_length=32, cap=256)
    assert len(by_context.ids) == 32 and "context length" in by_context.notice()
    short = encode_prompt_keep_first(tok, "Hello world", context_length=32)
    assert not short.truncated and short.notice() == "" and short.labels == ["Hello", "␣world"]


@pytest.mark.parametrize("text", ["", "   \n\t "])
def test_empty_prompt_is_refused(tok, text):
    with pytest.raises(PromptError, match="empty"):
        encode_prompt_keep_first(tok, text, context_length=32)


def test_special_token_literal_is_one_token(tok):
    p = encode_prompt_keep_first(tok, "Hi<|endoftext|>there", context_length=32)
    assert tok.eot_id in p.ids and "<|endoftext|>" in p.labels


def test_statistics_of_a_previous_token_head():
    w = torch.tensor([[1.0, 0, 0, 0],
                      [1.0, 0, 0, 0],
                      [0, 1.0, 0, 0],
                      [0, 0, 1.0, 0]])
    s = head_statistics(w)
    assert s["previous token"].item() == pytest.approx(1.0)
    assert s["first token"].item() == pytest.approx(1 / 3)
    assert s["self"].item() == pytest.approx(0.0)
    assert s["entropy"].item() == pytest.approx(0.0, abs=1e-6)


def test_statistics_of_a_uniform_head():
    w = torch.tensor([[1.0, 0, 0],
                      [0.5, 0.5, 0],
                      [1 / 3, 1 / 3, 1 / 3]])
    s = head_statistics(w)
    assert s["entropy"].item() == pytest.approx(1.0, abs=1e-6)      # as spread as it can be
    assert s["previous token"].item() == pytest.approx((0.5 + 1 / 3) / 2)
    assert s["first token"].item() == pytest.approx((0.5 + 1 / 3) / 2)
    assert s["self"].item() == pytest.approx((0.5 + 1 / 3) / 2)


def test_statistics_keep_leading_dims_and_handle_one_token():
    w = torch.zeros(3, 5, 4, 4)
    w[..., 0] = 1.0  # every head looks at the first token only: a sink
    s = head_statistics(w)
    assert all(v.shape == (3, 5) for v in s.values())
    assert torch.allclose(s["first token"], torch.ones(3, 5))
    rand = torch.softmax(torch.randn(3, 5, 6, 6).masked_fill(torch.ones(6, 6).triu(1).bool(), float("-inf")), -1)
    chunked, whole = head_statistics(rand, chunk=4), head_statistics(rand, chunk=1000)
    assert all(torch.allclose(chunked[k], whole[k]) for k in whole)
    one = head_statistics(torch.ones(2, 1, 1))
    assert one["self"].tolist() == [1.0, 1.0] and one["previous token"].tolist() == [0.0, 0.0]


def test_strongest_heads_finds_the_maximum():
    stat = torch.tensor([[0.1, 0.9], [0.5, 0.2]])
    assert strongest_heads(stat, k=2) == [(0, 1, pytest.approx(0.9)), (1, 0, pytest.approx(0.5))]
    assert strongest_heads(stat, k=1, largest=False)[0][:2] == (0, 0)


def test_pooling_fits_the_budget():
    w = torch.rand(12, 256, 256)
    maps, stride = pooled(w, 512 * 512)
    assert stride == 2 and maps.shape == (12, 128, 128)
    assert maps.numel() <= 512 * 512
    same, one = pooled(w[:2], 512 * 512)
    assert one == 1 and same is not None and same.shape == (2, 256, 256)


def test_focus_window_reports_the_weight_left_out():
    row = torch.tensor([0.4, 0.1, 0.2, 0.3, 0.0])
    assert focus_window(row, focus=3, max_keys=2) == (2, pytest.approx(0.5))
    assert focus_window(row, focus=3, max_keys=10) == (0, 0.0)


def test_steps_reproduce_what_the_model_recorded(model, att):
    s = attention_steps(model, att, layer=1, head=2, n_tokens=6)
    t = 6
    assert len(s.labels) == t and s.q.shape == (t, CFG.emb_dim // CFG.n_heads)
    assert s.check_qkv < 1e-5 and s.check_scores < 1e-5 and s.check_weights < 1e-6 and s.check_output < 1e-5
    assert torch.isinf(s.masked.triu(diagonal=1)[torch.ones(t, t).triu(1).bool()]).all()
    assert torch.allclose(s.scaled, s.raw_scores / math.sqrt(s.head_dim))
    assert torch.allclose(s.weights.sum(-1), torch.ones(t), atol=1e-6)
    assert torch.allclose(s.context[0], s.v[0], atol=1e-6)  # the first token attends only to itself


def test_dropout_illustration_zeroes_some_and_doubles_the_rest(model, att):
    gen = torch.Generator().manual_seed(5)
    s = attention_steps(model, att, 0, 0, n_tokens=MATH_MAX_TOKENS, generator=gen)
    assert 0 < s.dropout_keep.float().mean() < 1
    kept = s.dropout_keep
    assert torch.allclose(s.dropped[kept], 2 * s.weights[kept]) and torch.all(s.dropped[~kept] == 0)
    again = attention_steps(model, att, 0, 0, n_tokens=MATH_MAX_TOKENS, generator=torch.Generator().manual_seed(5))
    other = attention_steps(model, att, 0, 0, n_tokens=MATH_MAX_TOKENS, generator=torch.Generator().manual_seed(6))
    assert torch.equal(again.dropout_keep, s.dropout_keep)
    assert not torch.equal(other.dropout_keep, s.dropout_keep)


def test_steps_refuse_out_of_range(model, att):
    with pytest.raises(IndexError, match="layer"):
        attention_steps(model, att, layer=CFG.n_layers, head=0)
    with pytest.raises(IndexError, match="head"):
        attention_steps(model, att, layer=0, head=-1)
    with pytest.raises(ValueError, match="dropout"):
        attention_steps(model, att, 0, 0, dropout_p=1.0)


def test_steps_show_at_most_the_prompt(model, tok):
    short = trace_prompt(model, tok, "Hi there")
    assert len(attention_steps(model, short, 0, 0, n_tokens=10).labels) == 2


def test_toy_example_has_the_books_numbers():
    toy = toy_self_attention("journey")
    assert toy.scores.tolist() == pytest.approx([0.9544, 1.4950, 1.4754, 0.8434, 0.7070, 1.0865], abs=5e-5)
    assert toy.weights.tolist() == pytest.approx([0.1385, 0.2379, 0.2333, 0.1240, 0.1082, 0.1581], abs=5e-5)
    assert toy.context.tolist() == pytest.approx([0.4419, 0.6515, 0.5683], abs=5e-5)
    assert torch.equal(toy.all_weights[1], toy.weights)
    assert toy_self_attention(1).context.tolist() == toy.context.tolist()


def test_toy_example_refuses_unknown_queries():
    with pytest.raises(ValueError, match="journey"):
        toy_self_attention("voyage")
    with pytest.raises(IndexError):
        toy_self_attention(6)


def test_attention_view_holds_what_the_tab_draws(att):
    t = len(att.tokens.ids)
    view = attention_view(att, layer=1, head=0, focus=t - 1, statistic="entropy", max_cells=4, max_keys=2)
    assert np.array_equal(view.head_map, att.weights[1, 0].numpy())
    assert np.allclose(view.mean_map, att.weights[1].mean(0).numpy())
    assert view.layer_stride > 1 and view.layer_maps.shape[0] == att.n_heads  # pooled: 4 cells for the whole grid
    assert view.focus_start == t - 2
    assert view.focus_hidden == pytest.approx(float(att.weights[1, 0, t - 1, : t - 2].sum()))
    entropy = att.statistics()["entropy"]
    lay, head, value = view.strongest[0]
    assert value == pytest.approx(float(entropy.min())) and float(entropy[lay, head]) == pytest.approx(value)
