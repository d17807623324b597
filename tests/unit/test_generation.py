"""Decoding (book chapter 5.3): logits steps, generate, stream_generate, KV cache parity."""
import math

import pytest
import torch

from llm_core import GPTConfig, build_untrained, gpt2_tokenizer
from llm_core.generation import (
    IncrementalDecoder, SamplingSettings, Temperature, TopK, TopP, encode_prompt_keep_last, entropy_bits,
    generate, generate_text_simple, logits_pipeline, make_generator, measure_speed, next_token_probs,
    sample_next_token, softmax_with_temperature, stream_generate, token_pieces,
)

# The book's toy vocabulary and next-token logits after "every effort moves you".
TOY_VOCAB = ["closer", "every", "effort", "forward", "inches", "moves", "pizza", "toward", "you"]
TOY_LOGITS = torch.tensor([4.51, 0.89, -1.90, 6.75, 1.63, -1.62, -1.89, 6.28, 1.79])

# Context 16 so that 40 new tokens run past the window (the sliding-window path).
CFG = GPTConfig(vocab_size=101, context_length=16, emb_dim=32, n_heads=2, n_layers=2, drop_rate=0.0)


@pytest.fixture(scope="module")
def model():
    return build_untrained(CFG, seed=7)


def prompt(n=5):
    return torch.tensor([[3, 14, 15, 92, 65][:n]])


def toy_counts(temperature, n=1000):
    g = make_generator(123)
    settings = SamplingSettings(temperature=temperature)
    picks = [int(sample_next_token(TOY_LOGITS.unsqueeze(0), settings, g)) for _ in range(n)]
    counts = torch.bincount(torch.tensor(picks), minlength=len(TOY_VOCAB)).tolist()
    return {w: c for w, c in zip(TOY_VOCAB, counts) if c}


# ---------------------------------------------------------------- the book's toy numbers

def test_toy_greedy_picks_forward():
    pick = sample_next_token(TOY_LOGITS.unsqueeze(0), SamplingSettings())
    assert TOY_VOCAB[int(pick)] == "forward"


def test_toy_temperature_5_gives_pizza_4_3_percent():
    assert softmax_with_temperature(TOY_LOGITS, 5.0)[TOY_VOCAB.index("pizza")].item() == pytest.approx(0.043, abs=5e-4)


def test_toy_top_k_3_keeps_the_three_largest():
    kept = TopK(3)(TOY_LOGITS)
    assert sorted(kept[torch.isfinite(kept)].tolist(), reverse=True) == pytest.approx([6.75, 6.28, 4.51])
    assert torch.isinf(kept).sum().item() == 6


def test_toy_1000_samples_match_the_book():
    # Same calls in the same order as the book (seed 123, one multinomial draw per sample).
    assert toy_counts(1.0) == {"closer": 73, "forward": 582, "inches": 2, "toward": 343}
    assert toy_counts(0.1) == {"forward": 985, "toward": 15}


# ---------------------------------------------------------------- logits steps

def test_pipeline_order_and_labels():
    s = SamplingSettings(temperature=0.7, top_k=40, top_p=0.9)
    assert [type(step) for step in logits_pipeline(s)] == [TopK, Temperature, TopP]
    assert s.describe() == "top-k 40 → T 0.7 → top-p 0.9"
    assert SamplingSettings().describe().startswith("greedy")
    assert logits_pipeline(SamplingSettings(temperature=1.0)) == []


def test_top_p_keeps_smallest_set_reaching_p():
    probs = torch.tensor([0.05, 0.5, 0.12, 0.25, 0.08])
    logits = probs.log()
    kept = lambda p: set(torch.isfinite(TopP(p)(logits)).nonzero().flatten().tolist())
    assert kept(0.3) == {1}            # 0.5 alone reaches 0.3
    assert kept(0.7) == {1, 3}         # 0.5 + 0.25 = 0.75
    assert kept(0.8) == {1, 3, 2}      # 0.87
    assert kept(0.9) == {1, 3, 2, 4}   # 0.95
    assert kept(1.0) == {0, 1, 2, 3, 4}


@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.77, 0.9, 0.99])
def test_top_p_on_random_logits_is_minimal(p):
    g = torch.Generator().manual_seed(int(p * 1000))
    logits = torch.randn(200, generator=g) * 2
    probs = torch.softmax(logits, -1)
    keep = torch.isfinite(TopP(p)(logits))
    kept_probs = probs[keep]
    assert kept_probs.sum() >= p - 1e-6                                 # reaches p
    assert kept_probs.sum() - kept_probs.min() < p                      # dropping any kept token falls short
    assert probs[~keep].max() <= kept_probs.min() if (~keep).any() else True  # the most likely ones


def test_next_token_probs_after_filtering_renormalises():
    s = SamplingSettings(temperature=1.0, top_k=3)
    probs = next_token_probs(TOY_LOGITS, s)
    assert probs.sum().item() == pytest.approx(1.0)
    assert (probs > 0).sum().item() == 3
    greedy = next_token_probs(TOY_LOGITS, SamplingSettings())
    assert greedy.tolist()[TOY_VOCAB.index("forward")] == 1.0 and greedy.sum().item() == 1.0


def test_temperature_to_zero_approaches_greedy():
    argmax = int(TOY_LOGITS.argmax())
    p_top = [next_token_probs(TOY_LOGITS, SamplingSettings(temperature=t))[argmax].item()
             for t in (2.0, 1.0, 0.5, 0.1, 0.01)]
    assert all(a < b for a, b in zip(p_top, p_top[1:]))
    assert p_top[-1] > 0.999


def test_entropy_bits():
    assert entropy_bits(torch.full((8,), 1 / 8)).item() == pytest.approx(3.0)
    assert entropy_bits(torch.tensor([1.0, 0.0, 0.0])).item() == pytest.approx(0.0)


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(temperature=-0.5), "temperature"),
    (dict(temperature=float("nan")), "temperature"),
    (dict(top_k=0), "top-k"),
    (dict(top_k=1000), "vocabulary"),
    (dict(top_p=0.0), "top-p"),
    (dict(top_p=1.5), "top-p"),
    (dict(max_new_tokens=-1), "max new tokens"),
])
def test_settings_problems(kwargs, fragment):
    s = SamplingSettings(**kwargs)
    assert any(fragment in p for p in s.problems(vocab_size=101))
    with pytest.raises(ValueError, match=fragment):
        s.check(vocab_size=101)


# ---------------------------------------------------------------- generate on a model

def test_greedy_equals_argmax_step_by_step(model):
    out = generate(model, prompt(), max_new_tokens=8, context_size=CFG.context_length)
    assert out.shape == (1, 13)
    with torch.no_grad():
        for t in range(5, 13):
            assert out[0, t].item() == model(out[:, :t])[0, -1].argmax().item()


def test_generate_text_simple_is_greedy(model):
    assert torch.equal(generate_text_simple(model, prompt(), 6), generate(model, prompt(), 6, temperature=0.0))


def test_tiny_temperature_equals_greedy(model):
    greedy = generate(model, prompt(), 12)
    cold = generate(model, prompt(), 12, temperature=1e-6, generator=make_generator(1))
    assert torch.equal(greedy, cold)


def test_top_k_1_equals_greedy(model):
    greedy = generate(model, prompt(), 12)
    for seed in (1, 2):
        assert torch.equal(greedy, generate(model, prompt(), 12, temperature=1.5, top_k=1,
                                            generator=make_generator(seed)))


def test_same_seed_same_tokens_different_seed_differs(model):
    run = lambda seed: generate(model, prompt(), 20, temperature=1.0, generator=make_generator(seed))
    assert torch.equal(run(42), run(42))
    assert not torch.equal(run(42), run(43))


@pytest.mark.parametrize("kwargs", [dict(), dict(temperature=0.9, top_k=20, top_p=0.9)])
def test_cached_and_uncached_generate_identical_tokens(model, kwargs):
    # 5 + 40 tokens > context 16: covers the sliding window after the cache fills.
    runs = [generate(model, prompt(), 40, use_cache=c, generator=make_generator(5), **kwargs)
            for c in (True, False)]
    assert torch.equal(runs[0], runs[1])
    assert runs[0].shape == (1, 45)


def test_smaller_context_size_window(model):
    a = generate(model, prompt(), 10, context_size=4, use_cache=True)
    b = generate(model, prompt(), 10, context_size=4, use_cache=False)
    assert torch.equal(a, b)
    with torch.no_grad():  # the last token only saw a 4-token window
        assert a[0, -1].item() == model(a[:, -5:-1])[0, -1].argmax().item()


def test_eos_stops_without_appending(model):
    full = generate(model, prompt(), 10)
    eos = full[0, 7].item()  # the third new token
    first = (full[0, 5:] == eos).nonzero()[0].item()
    out = generate(model, prompt(), 10, eos_id=eos)
    assert out.shape[1] == 5 + first
    assert torch.equal(out, full[:, :5 + first])


def test_batched_generate_pads_finished_rows(model):
    idx = torch.tensor([[3, 14, 15], [9, 26, 5]])
    plain = generate(model, idx, 8)
    eos = plain[0, 3].item()  # row 0 finishes at once
    out = generate(model, idx, 8, eos_id=eos)
    assert out[0, 3:].tolist() == [eos] * (out.shape[1] - 3)
    row1 = plain[1, 3:].tolist()
    done = row1.index(eos) + 1 if eos in row1 else len(row1)
    assert out.shape[1] == 3 + done                       # stops once every row has finished
    assert out[1].tolist() == plain[1, :3 + done].tolist()  # row 1 follows its own greedy path


def test_generate_restores_train_mode_and_turns_dropout_off():
    m = build_untrained(CFG.with_(drop_rate=0.5), seed=7)
    m.train()
    a = generate(m, prompt(), 6)
    b = generate(m, prompt(), 6)
    assert torch.equal(a, b)
    assert m.training


def test_generate_rejects_bad_input(model):
    with pytest.raises(ValueError, match="at least one token"):
        generate(model, torch.zeros((1, 0), dtype=torch.long), 3)
    with pytest.raises(ValueError, match="top-k"):
        generate(model, prompt(), 3, temperature=1.0, top_k=0)
    assert torch.equal(generate(model, prompt(), 0), prompt())


@pytest.mark.slow
def test_book_untrained_gpt2_hello_i_am():  # through the KV-cached path
    from llm_core import GPT_CONFIG_124M
    tok = gpt2_tokenizer()
    m = build_untrained(GPT_CONFIG_124M)
    out = generate_text_simple(m, torch.tensor([tok.encode("Hello, I am")]), 6, context_size=1024)
    assert tok.decode(out[0].tolist()) == "Hello, I am Featureiman Byeswickattribute argue"


# ---------------------------------------------------------------- streaming with details

def test_stream_matches_generate_with_the_same_seed(model):
    s = SamplingSettings(temperature=1.2, top_k=30, top_p=0.95, max_new_tokens=25)
    streamed = [st.token_id for st in stream_generate(model, prompt()[0].tolist(), s, make_generator(9))]
    batch = generate(model, prompt(), 25, temperature=1.2, top_k=30, top_p=0.95, generator=make_generator(9))
    assert streamed == batch[0, 5:].tolist()


def test_stream_step_records(model):
    s = SamplingSettings(temperature=0.8, top_k=5, max_new_tokens=20, n_candidates=8)
    steps = list(stream_generate(model, prompt(), s, make_generator(3)))
    assert [st.index for st in steps] == list(range(20))
    for st in steps:
        before = [c.prob_before for c in st.candidates]
        assert len(st.candidates) == 8 and before == sorted(before, reverse=True)
        assert st.kept == 5
        assert sum(c.prob_after > 0 for c in st.candidates) == 5   # the top 5 survive top-k
        assert sum(c.prob_after for c in st.candidates) == pytest.approx(1.0, abs=1e-5)
        assert 0 < st.prob_after <= 1 and 0 < st.prob_before <= 1
        assert st.token_id in [c.token_id for c in st.candidates[:5]]
        assert 0 <= st.entropy_after_bits <= math.log2(5) + 1e-4
        assert st.entropy_bits <= math.log2(CFG.vocab_size) + 1e-4
    # the cache serves steps until the 16-token window is full, then the window is recomputed
    assert [st.from_cache for st in steps[:3]] == [False, True, True]
    assert not steps[-1].from_cache
    assert all(b.elapsed_s >= a.elapsed_s for a, b in zip(steps, steps[1:]))


def test_stream_greedy_records_the_pick_as_certain(model):
    steps = list(stream_generate(model, prompt(), SamplingSettings(max_new_tokens=4)))
    for st in steps:
        assert st.prob_after == 1.0 and st.kept == 1 and st.entropy_after_bits == 0.0
        assert st.token_id == st.candidates[0].token_id


def test_stream_stops_at_eos_and_flags_it(model):
    greedy = [st.token_id for st in stream_generate(model, prompt(), SamplingSettings(max_new_tokens=10))]
    eos = greedy[3]
    steps = list(stream_generate(model, prompt(), SamplingSettings(max_new_tokens=10, eos_id=eos)))
    assert steps[-1].is_eos and steps[-1].token_id == eos
    assert not any(st.is_eos for st in steps[:-1])
    assert len(steps) == greedy.index(eos) + 1


def test_stream_vocab_limit_and_long_prompt(model):
    s = SamplingSettings(temperature=2.0, max_new_tokens=30)
    steps = list(stream_generate(model, list(range(40)), s, make_generator(0), vocab_size=10))
    assert all(st.token_id < 10 for st in steps)
    with pytest.raises(ValueError, match="at least one"):
        list(stream_generate(model, [], s))


def test_measure_speed_counts_tokens(model):
    rep = measure_speed(model, prompt(), 12, use_cache=True)
    assert rep.new_tokens == 12 and rep.seconds > 0 and 0 < rep.first_token_s <= rep.seconds
    assert rep.tokens_per_s > 0


# ---------------------------------------------------------------- text helpers

def test_encode_prompt_keep_last_empty_and_too_long():
    tok = gpt2_tokenizer()
    empty = encode_prompt_keep_last(tok, "", 16)
    assert empty.ids == [tok.eot_id] and empty.from_endoftext
    long = encode_prompt_keep_last(tok, "word " * 40, 16)
    assert len(long.ids) == 16 and long.dropped == len(tok.encode("word " * 40)) - 16
    assert long.ids == tok.encode("word " * 40)[-16:]
    literal = encode_prompt_keep_last(tok, "<|endoftext|>Hi", 16)
    assert literal.ids[0] == tok.eot_id


def test_encode_prompt_keep_last_without_endoftext_token():
    class NoEot:
        eot_id = None

        def encode(self, text):
            return [ord(c) for c in text]

    with pytest.raises(ValueError, match="empty"):
        encode_prompt_keep_last(NoEot(), "", 8)


def test_incremental_decoder_holds_split_characters():
    tok = gpt2_tokenizer()
    text = "Snow ☃ and 🦙 llamas, naïve café"
    ids = tok.encode(text)
    pieces = token_pieces(tok, ids)
    assert "".join(pieces) == text
    assert len(pieces) == len(ids)
    assert "\ufffd" not in "".join(pieces)
    dec = IncrementalDecoder(tok)
    assert "".join(dec.feed(i) for i in ids) + dec.flush() == text


def test_positions_processed_with_and_without_cache(model):
    s = SamplingSettings(max_new_tokens=20)
    cached = list(stream_generate(model, prompt(), s))
    uncached = list(stream_generate(model, prompt(), s.with_(use_cache=False)))
    assert [st.positions for st in uncached] == [min(5 + i, 16) for i in range(20)]
    # the prompt once, then one position per token until the 16-slot cache is full
    assert [st.positions for st in cached[:12]] == [5] + [1] * 11
    assert [st.positions for st in cached[12:]] == [16] * 8
    assert [st.token_id for st in cached] == [st.token_id for st in uncached]
    rep = measure_speed(model, prompt(), 20, use_cache=False)
    assert rep.positions == sum(st.positions for st in uncached)


def test_summarize_steps_and_next_token_logits(model):
    from llm_core.generation import next_token_logits, summarize_steps

    steps = list(stream_generate(model, prompt(), SamplingSettings(temperature=1.0, max_new_tokens=12),
                                 make_generator(4)))
    summary = summarize_steps(steps)
    assert summary.tokens == 12
    assert summary.surprisal_bits == pytest.approx(sum(-math.log2(s.prob_before) for s in steps) / 12)
    assert 0 < summary.distinct <= 1 and summary.tokens_per_s > 0
    # the recorded model probability of a pick is the softmax of the logits at that position
    ids = prompt()[0].tolist() + [s.token_id for s in steps]
    for i in (0, 7):
        probs = torch.softmax(next_token_logits(model, ids[:5 + i]), -1)
        assert probs[steps[i].token_id].item() == pytest.approx(steps[i].prob_before, rel=1e-4)
    assert summarize_steps([]).tokens == 0


def test_book_toy_constants_match_the_book():
    from llm_core.generation import BOOK_TOY_LOGITS, BOOK_TOY_VOCAB

    assert list(BOOK_TOY_VOCAB) == TOY_VOCAB and torch.tensor(BOOK_TOY_LOGITS).tolist() == TOY_LOGITS.tolist()


def test_prepare_for_decoding_keeps_values_ties_and_saving(tmp_path):
    from llm_core.checkpoint import load_checkpoint, save_checkpoint
    from llm_core.generation import prepare_for_decoding

    m = build_untrained(CFG.with_(tie_weights=True), seed=3)
    ids = torch.randint(0, CFG.vocab_size, (1, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = m(ids)
    prepare_for_decoding(m)
    prepare_for_decoding(m)  # idempotent
    w = m.trf_blocks[0].ff.layers[0].weight
    assert w.shape == (4 * CFG.emb_dim, CFG.emb_dim) and w.stride() == (1, 4 * CFG.emb_dim)
    assert m.out_head.weight is m.tok_emb.weight
    with torch.no_grad():
        assert torch.allclose(m(ids), before, atol=1e-5)
    save_checkpoint(tmp_path / "ckpt", m)
    loaded, _, _ = load_checkpoint(tmp_path / "ckpt")
    with torch.no_grad():
        assert torch.allclose(loaded(ids), before, atol=1e-5)
    trained = build_untrained(CFG, seed=3).train()
    prepare_for_decoding(trained)  # a model being trained keeps its layout
    assert trained.trf_blocks[0].ff.layers[0].weight.is_contiguous()


def test_generate_keeps_parameters_an_optimizer_holds():
    # The book's training loop: model.eval(); generate(...); model.train() between steps.
    m = build_untrained(CFG, seed=5).train()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    m.eval()
    generate(m, prompt(), 4)
    list(stream_generate(m, prompt(), SamplingSettings(max_new_tokens=3)))
    m.train()
    held = {id(p) for group in opt.param_groups for p in group["params"]}
    assert held == {id(p) for p in m.parameters()}
