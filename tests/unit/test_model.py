"""GPTModel: the book's structure, the fast path vs the traced path, the KV cache."""
import math

import pytest
import torch

from llm_core import GPT_CONFIG_124M, GPTConfig, GPTModel, build_untrained, gpt2_tokenizer
from llm_core.model import GELU, LayerNorm, eval_mode, gelu_formula

SMALL = GPTConfig(vocab_size=97, context_length=24, emb_dim=32, n_heads=4, n_layers=3, drop_rate=0.0)


def test_layernorm_matches_book_formula():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 8) * 3 + 1
    ln = LayerNorm(8)
    mean = x.mean(-1, keepdim=True)
    var = x.var(-1, keepdim=True, unbiased=False)
    assert torch.allclose(ln(x), (x - mean) / torch.sqrt(var + 1e-5), atol=1e-5)
    assert ln.eps == 1e-5


def test_gelu_is_the_tanh_approximation():
    x = torch.linspace(-4, 4, 101)
    assert torch.allclose(GELU()(x), gelu_formula(x), atol=1e-6)
    assert not torch.allclose(GELU()(x), torch.nn.functional.gelu(x), atol=1e-6)  # not the exact erf GELU


def test_config_validation():
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(emb_dim=10, n_heads=3)
    with pytest.raises(ValueError, match="n_layers"):
        GPTConfig(n_layers=0)


def test_param_counts_match_the_book_for_gpt2_small():
    m = build_untrained(GPT_CONFIG_124M)
    assert m.num_parameters() == 163_009_536
    assert m.num_parameters() - m.out_head.weight.numel() == 124_412_160
    block = m.trf_blocks[0]
    assert sum(p.numel() for p in block.att.parameters()) == 2_360_064
    assert sum(p.numel() for p in block.ff.parameters()) == 4_722_432
    tied = GPTModel(GPT_CONFIG_124M.with_(tie_weights=True))
    assert tied.num_parameters() == 124_412_160


@pytest.mark.slow
def test_untrained_gpt2_small_says_what_the_book_says():
    tok = gpt2_tokenizer()
    m = build_untrained(GPT_CONFIG_124M, seed=123)
    ids = torch.tensor([tok.encode("Hello, I am")])
    with torch.no_grad():
        for _ in range(6):
            ids = torch.cat([ids, m(ids)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert tok.decode(ids[0].tolist()) == "Hello, I am Featureiman Byeswickattribute argue"


def test_traced_path_equals_fast_path_and_weights_are_causal():
    m = build_untrained(SMALL, seed=1)
    ids = torch.randint(0, SMALL.vocab_size, (2, 17))
    with torch.no_grad():
        fast = m(ids)
    trace = m.run_with_trace(ids)
    assert torch.allclose(trace["logits"], fast, atol=1e-5)
    for i in range(SMALL.n_layers):
        w = trace[f"blocks.{i}.attn.weights"]
        assert w.shape == (2, SMALL.n_heads, 17, 17)
        assert torch.allclose(w.sum(-1), torch.ones(2, SMALL.n_heads, 17), atol=1e-5)
        assert torch.all(w.triu(diagonal=1) == 0)
    assert torch.allclose(trace["embed"], trace["tok_emb"] + trace["pos_emb"])


def test_kv_cache_matches_uncached_forward():
    m = build_untrained(SMALL, seed=2)
    ids = torch.randint(0, SMALL.vocab_size, (1, 20))
    with torch.no_grad():
        full = m(ids)
        cache = m.new_kv_cache()
        first = m(ids[:, :7], kv_cache=cache)       # a prompt
        chunk = m(ids[:, 7:12], kv_cache=cache)     # several new tokens at once
        steps = [m(ids[:, t:t + 1], kv_cache=cache) for t in range(12, 20)]  # one at a time
    cached = torch.cat([first, chunk, *steps], dim=1)
    assert cache.length == 20
    assert (cached - full).abs().max().item() < 1e-4


def test_last_only_gives_the_last_positions_logits():
    m = build_untrained(SMALL, seed=3)
    ids = torch.randint(0, SMALL.vocab_size, (2, 9))
    with torch.no_grad():
        full = m(ids)
        last = m(ids, last_only=True)
        cache = m.new_kv_cache(batch_size=2)
        cached_last = m(ids, kv_cache=cache, last_only=True)
    assert last.shape == (2, 1, SMALL.vocab_size)
    assert (last[:, 0] - full[:, -1]).abs().max().item() < 1e-5
    assert (cached_last - last).abs().max().item() < 1e-5 and cache.length == 9


def test_context_overflow_is_a_clear_error():
    m = build_untrained(SMALL)
    with pytest.raises(ValueError, match="context length"):
        m(torch.zeros(1, SMALL.context_length + 1, dtype=torch.long))


def test_untrained_loss_is_near_uniform():
    m = build_untrained(SMALL.with_(vocab_size=5000))
    ids = torch.randint(0, 5000, (4, 24))
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(m(ids)[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
    assert abs(loss.item() - math.log(5000)) < 0.5


def test_eval_mode_turns_dropout_off_for_the_block_and_restores_the_mode():
    model = GPTModel(GPTConfig(vocab_size=50, context_length=8, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.5))
    x = torch.tensor([[1, 2, 3, 4]])
    model.train()
    with eval_mode(model):
        assert not any(m.training for m in model.modules())
        assert torch.equal(model(x), model(x))  # no dropout: the same logits twice
    assert all(m.training for m in model.modules())
    with pytest.raises(RuntimeError):
        with eval_mode(model):
            raise RuntimeError("fails inside")
    assert model.training
    model.eval()
    with eval_mode(model):
        pass
    assert not model.training


def test_blocked_dropout_attention_is_the_fused_call_with_the_same_random_stream(monkeypatch):
    """Training with dropout on the CPU: each block of query rows meets only the keys it may see,
    and the dropout mask is drawn as F.dropout draws it, so outputs, gradients and the random
    generator's state afterwards are those of scaled_dot_product_attention(dropout_p, is_causal)."""
    import llm_core.model as M

    t = 2 * M.DROPOUT_CHUNK + 37                                # two full blocks and a partial one
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 3, t, 8, generator=gen, requires_grad=True) for _ in range(3))
    mask = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)
    grad_out = torch.randn(2, 3, t, 8, generator=gen)

    def run(fn):
        torch.manual_seed(11)
        out = fn()
        out.backward(grad_out)
        grads = [x.grad.clone() for x in (q, k, v)]
        for x in (q, k, v):
            x.grad = None
        return out.detach(), grads, torch.get_rng_state()

    ours = run(lambda: M.causal_dropout_attention(q, k, v, 0.3, mask))
    fused = run(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=0.3, is_causal=True))
    assert torch.allclose(ours[0], fused[0], atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(ours[1], fused[1]))
    assert torch.equal(ours[2], fused[2])                     # the same random numbers were drawn
    assert not torch.allclose(run(lambda: M.causal_dropout_attention(q, k, v, 0.5, mask))[0], fused[0])

    # the module takes this path only when training with dropout on a window of two blocks or more
    calls = []
    real = M.causal_dropout_attention
    monkeypatch.setattr(M, "causal_dropout_attention", lambda *a, **kw: calls.append(a[0].shape[2]) or real(*a, **kw))
    att = M.MultiHeadAttention(8, 8, t, 0.3, 2)
    x = torch.randn(1, t, 8, generator=gen)
    att.train()(x), att.train()(x[:, : 2 * M.DROPOUT_CHUNK - 1])
    with torch.no_grad():
        att.eval()(x)
    M.MultiHeadAttention(8, 8, t, 0.0, 2).train()(x)
    assert calls == [t]
