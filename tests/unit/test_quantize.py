"""int8 decoding (llm_core/quantize.py): what is converted, what it costs, and its quality.

Quality is measured two ways:
- perplexity of held-out text: int8 within 1 % of fp32;
- greedy agreement: at each position, int8's argmax given the same prefix equals fp32's
  (teacher-forced, so one early disagreement does not count as 128; free-running sequences
  of a model that loops are a coin toss after the first tie-break), counted over all
  positions and over those where fp32's pick is not a near-tie.

Models: the shipped pydoc-gpt on the validation tenth of its own corpus (text it never trained
on), and a GPT-2-small-shaped model (12 layers, 768 dims, 50,257 vocabulary, tied head) with
GPT-2's own initialisation: trained GPT-2 weights cannot be downloaded here, and random weights
at GPT-2's scale are the harder case for argmax agreement (the logits of an untrained model are
nearly flat, so small int8 errors flip more picks than on a trained model).
"""
import math

import pytest
import torch
import torch.nn.functional as F

from llm_core import GPT_CONFIG_124M, GPTModel, build_untrained, load_model
from llm_core.config import GPTConfig
from llm_core.corpus import pydoc_corpus, train_val_split
from llm_core.generation import SamplingSettings, generate, prepare_for_decoding, stream_generate
from llm_core.quantize import (
    check_precision, int8_linear_bytes, quantize_int8, streamed_bytes_per_token, weight_bytes,
)
from llm_core.training import gpt2_init_

TINY = GPTConfig(vocab_size=97, context_length=32, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.0,
                 tie_weights=True, qkv_bias=True)
STEPS = 128


def _quantized_types():
    from torch.ao.nn.quantized.dynamic import Linear

    return Linear


def perplexity(model, windows):
    with torch.inference_mode():
        logits = model(windows[:, :-1])
        return math.exp(F.cross_entropy(logits.flatten(0, 1), windows[:, 1:].flatten()).item())


def argmax_agreement(fp32, int8, ids, min_margin=0.0):
    """Share of positions where both models pick the same next token after the same prefix.

    With `min_margin`, only positions where fp32's top token leads its runner-up by at least
    that much probability count: a near-tie may flip under any rounding and says nothing.
    """
    with torch.inference_mode():
        logits = fp32(ids)
        a, b = logits.argmax(-1), int8(ids).argmax(-1)
    top2 = logits.softmax(-1).topk(2, dim=-1).values
    decided = (top2[..., 0] - top2[..., 1]) >= min_margin
    return (a == b)[decided].float().mean().item()


# ---------------------------------------------------------------- what is converted

def test_every_linear_becomes_int8_and_the_original_is_untouched():
    model = build_untrained(TINY, seed=3)
    ids = torch.randint(0, TINY.vocab_size, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        before = model(ids)
    q = quantize_int8(model)
    n_linear = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    assert n_linear == 6 * TINY.n_layers + 1  # q, k, v, out, ff up, ff down per block + head
    assert not any(isinstance(m, torch.nn.Linear) for m in q.modules())
    assert sum(isinstance(m, _quantized_types()) for m in q.modules()) == n_linear
    qh = q.out_head._packed_params._weight_bias()[0]
    assert qh.dtype == torch.qint8 and qh.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric)
    assert qh.q_per_channel_scales().numel() == TINY.vocab_size  # one scale per output channel
    # The fp32 model still computes exactly what it did; its embeddings are shared, not copied.
    with torch.inference_mode():
        assert torch.equal(model(ids), before)
    assert q.tok_emb.weight is model.tok_emb.weight
    assert not any(p.requires_grad for p in q.parameters())


def test_int8_bytes_are_about_a_quarter_of_the_linear_weights():
    model = build_untrained(TINY.with_(emb_dim=64, vocab_size=512), seed=1)
    q = quantize_int8(model)
    linear_fp32 = sum(m.weight.numel() * 4 for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert 0.25 * linear_fp32 < int8_linear_bytes(q) < 0.32 * linear_fp32
    assert weight_bytes(q) < weight_bytes(model)
    assert streamed_bytes_per_token(q) < 0.32 * streamed_bytes_per_token(model)


def test_check_precision():
    assert check_precision(None) == "fp32" and check_precision(" INT8 ") == "int8"
    with pytest.raises(ValueError, match="fp32, int8"):
        check_precision("int4")


def test_stream_generate_runs_on_the_int8_copy():
    model = build_untrained(TINY, seed=5)
    q = quantize_int8(model)
    steps = list(stream_generate(q, [1, 2, 3], SamplingSettings(temperature=0.8, top_k=20, max_new_tokens=40),
                                 torch.Generator().manual_seed(1)))
    assert len(steps) == 40  # past the 32-token window too
    assert all(0 <= s.token_id < TINY.vocab_size and 0 < s.prob_after <= 1 for s in steps)


# ---------------------------------------------------------------- the registry keeps one copy

def test_bundle_for_precision_is_cached_and_counted(monkeypatch):
    from llm_core import registry

    bundle = load_model("untrained:tiny")
    before = registry._weight_bytes(bundle)
    assert bundle.for_precision("fp32") is bundle.model
    q = bundle.for_precision("int8")
    assert bundle.for_precision("int8") is q
    assert registry._weight_bytes(bundle) == before + int8_linear_bytes(q) > before
    with pytest.raises(ValueError):
        bundle.for_precision("fp16")


# ---------------------------------------------------------------- quality

@pytest.fixture(scope="module")
def held_out_text():
    return train_val_split(pydoc_corpus())[1]


def test_shipped_model_int8_quality(held_out_text):
    bundle = load_model("pydoc-gpt")
    model = bundle.model
    q = quantize_int8(model)
    ctx = model.cfg.context_length
    ids = torch.tensor(bundle.tokenizer.encode(held_out_text[:40_000]))
    n = min(16, (len(ids) - 1) // (ctx + 1))
    windows = ids[:n * (ctx + 1)].view(n, ctx + 1)
    p32, p8 = perplexity(model, windows), perplexity(q, windows)
    assert abs(p8 - p32) / p32 <= 0.01, (p32, p8)
    # Greedy picks on every held-out position (16 full contexts): nearly all agree, and the
    # few that flip are near-ties (measured: 95.2 % overall, 99.3 % where fp32 leads by 0.05).
    assert argmax_agreement(model, q, windows[:, :-1]) >= 0.93
    assert argmax_agreement(model, q, windows[:, :-1], min_margin=0.05) >= 0.98
    # Along the model's own greedy continuation too.
    cont = generate(model, windows[:1, :16], STEPS - 16)
    assert argmax_agreement(model, q, cont, min_margin=0.05) >= 0.98


@pytest.mark.slow
def test_gpt2_small_shape_int8_quality(held_out_text):
    from llm_core import gpt2_tokenizer

    cfg = GPT_CONFIG_124M.with_(context_length=256, tie_weights=True, qkv_bias=True, drop_rate=0.0)
    with torch.random.fork_rng(devices=[]):
        model = gpt2_init_(GPTModel(cfg), seed=0).eval()
    prepare_for_decoding(model)  # the layout the app decodes with
    q = quantize_int8(model)
    ids = torch.tensor(gpt2_tokenizer().encode(held_out_text[:20_000]))
    windows = ids[:4 * (cfg.context_length + 1)].view(4, cfg.context_length + 1)
    p32, p8 = perplexity(model, windows), perplexity(q, windows)
    assert abs(p8 - p32) / p32 <= 0.01, (p32, p8)
    cont = generate(model, windows[:1, :16], STEPS)
    assert argmax_agreement(model, q, cont[:, :-1]) >= 0.95
