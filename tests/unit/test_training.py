"""The pre-training loop: initial loss, overfitting, stopping, divergence, caps, and the CLI."""
import json
import math
import threading
from pathlib import Path

import pytest
import torch

from llm_core.checkpoint import load_checkpoint
from llm_core.config import GPTConfig
from llm_core.data import create_dataloader_v1
from llm_core.model import build_untrained
from llm_core.tokenizers import GPT2_PATTERN, bpe_from_merges
from llm_core.training import (TrainConfig, calc_loss_batch, calc_loss_loader, lr_at, perplexity,
                               pick_device, train_model, train_model_simple)

DATA = Path(__file__).resolve().parent.parent / "data"
TEXT = "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs. " * 12


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and a busy machine makes them wait on each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def byte_tok():
    """A 257-token byte-level tokenizer: small vocabulary, fast tests."""
    return bpe_from_merges("bytes", {bytes([i]): i for i in range(256)}, GPT2_PATTERN, with_endoftext=True)


def tiny_model(vocab: int, seed: int = 123):
    cfg = GPTConfig(vocab_size=vocab, context_length=32, emb_dim=32, n_heads=2, n_layers=2, drop_rate=0.0)
    return build_untrained(cfg, seed=seed)


def loaders(tok, batch_size=4, length=32, shuffle=True):
    train = create_dataloader_v1(TEXT, batch_size=batch_size, max_length=length, stride=length,
                                 tokenizer=tok, seed=1, shuffle=shuffle)
    val = create_dataloader_v1(TEXT[:400], batch_size=batch_size, max_length=length, stride=length,
                               shuffle=False, drop_last=False, tokenizer=tok)
    return train, val


def params(model):
    return [p.detach().clone() for p in model.parameters()]


def test_untrained_loss_is_about_ln_vocab(byte_tok):
    model = tiny_model(byte_tok.n_vocab)
    train, _ = loaders(byte_tok)
    with torch.no_grad():
        loss = calc_loss_loader(train, model, "cpu", num_batches=3)
    assert abs(loss - math.log(byte_tok.n_vocab)) < 0.5


def test_calc_loss_helpers(byte_tok):
    model = tiny_model(byte_tok.n_vocab)
    train, _ = loaders(byte_tok)
    x, y = next(iter(train))
    with torch.no_grad():
        batch_loss = calc_loss_batch(x, y, model, "cpu")
        expected = torch.nn.functional.cross_entropy(model(x).reshape(-1, byte_tok.n_vocab), y.reshape(-1))
    assert batch_loss.shape == () and torch.allclose(batch_loss, expected)
    empty = create_dataloader_v1("too short", batch_size=1, max_length=32, stride=32, tokenizer=byte_tok)
    assert math.isnan(calc_loss_loader(empty, model, "cpu"))


def test_perplexity_of_the_books_untrained_loss():
    assert perplexity(10.7940) == pytest.approx(48725.8, rel=1e-4)
    assert perplexity(1e6) == float("inf")


def test_a_few_dozen_steps_overfit_a_repeated_text(byte_tok):
    model = tiny_model(byte_tok.n_vocab)
    train, val = loaders(byte_tok)
    cfg = TrainConfig(max_steps=60, lr=5e-3, weight_decay=0.0, eval_interval=20, eval_batches=4,
                      sample_prompt="The quick", sample_tokens=8)
    events = list(train_model(model, train, val, cfg, tokenizer=byte_tok))
    evals = [e for e in events if e.is_eval]
    first, last = evals[0], evals[-1]
    assert first.step == 0 and last.done and last.status == "finished" and last.step == 60
    assert last.train_loss < 0.4 * first.train_loss
    assert last.perplexity == pytest.approx(math.exp(last.val_loss))
    assert last.sample.startswith("The quick") and len(last.sample) > len("The quick")
    assert last.tokens_seen == 60 * 4 * 32 and last.tokens_per_s > 0


def test_events_count_steps_and_evaluate_on_schedule(byte_tok):
    model = tiny_model(byte_tok.n_vocab)
    train, val = loaders(byte_tok)
    cfg = TrainConfig(max_steps=12, lr=1e-3, eval_interval=5, eval_batches=1, sample_tokens=2)
    events = list(train_model(model, train, val, cfg, tokenizer=byte_tok))
    steps = [e.step for e in events]
    assert steps == list(range(0, 13))
    assert [e.step for e in events if e.is_eval] == [0, 5, 10, 12]
    assert [e.done for e in events].count(True) == 1 and events[-1].done
    assert all(e.total_steps == 12 for e in events)
    assert all(a.tokens_seen < b.tokens_seen for a, b in zip(events, events[1:]))
    # the ETA goes at the pace of the steps (training time: tokens / tokens per second), not of the
    # wall clock, which includes the evaluations
    for e in events[1:-1]:
        assert e.eta_s == pytest.approx((e.total_steps - e.step) * (e.tokens_seen / e.tokens_per_s) / e.step)


def test_epochs_cap_the_number_of_steps(byte_tok):
    model = tiny_model(byte_tok.n_vocab)
    train, val = loaders(byte_tok, batch_size=8)
    cfg = TrainConfig(max_steps=1000, num_epochs=2, eval_interval=100, eval_batches=1, sample_tokens=1)
    last = list(train_model(model, train, val, cfg))[-1]
    assert last.step == 2 * len(train) and last.epoch == 2 and last.status == "finished"


def test_stop_event_returns_the_partial_model(byte_tok):
    model = tiny_model(byte_tok.n_vocab)
    before = params(model)
    train, val = loaders(byte_tok)
    stop = threading.Event()
    cfg = TrainConfig(max_steps=100, lr=1e-3, eval_interval=50, eval_batches=1, sample_tokens=1)
    events = []
    for ev in train_model(model, train, val, cfg, stop=stop):
        events.append(ev)
        if ev.step == 5:
            stop.set()
    last = events[-1]
    assert last.done and last.stopped and last.status == "stopped" and last.step == 5
    assert "stopped" in last.reason
    assert any(not torch.equal(a, b) for a, b in zip(before, params(model)))  # trained, not reset
    assert not model.training


def test_stop_callable_and_time_cap(byte_tok):
    model = tiny_model(byte_tok.n_vocab)
    train, val = loaders(byte_tok)
    cfg = TrainConfig(max_steps=100, eval_interval=50, eval_batches=1, sample_tokens=1)
    last = list(train_model(model, train, val, cfg, stop=lambda: True))[-1]
    assert last.status == "stopped" and last.step == 0
    cfg = TrainConfig(max_steps=100, eval_interval=50, eval_batches=1, sample_tokens=1, max_seconds=0)
    last = list(train_model(model, train, val, cfg))[-1]
    assert last.status == "time_limit" and last.stopped and "time limit" in last.reason


def test_huge_learning_rate_trips_the_nan_guard_and_rolls_back(byte_tok):
    model = tiny_model(byte_tok.n_vocab)
    before = params(model)
    train, val = loaders(byte_tok)
    cfg = TrainConfig(max_steps=50, lr=1e30, weight_decay=0.0, grad_clip=None, eval_interval=100,
                      eval_batches=1, sample_tokens=1)
    last = list(train_model(model, train, val, cfg))[-1]
    assert last.done and last.stopped and last.status == "diverged"
    assert "diverged" in last.reason and "rolled back to step 0" in last.reason
    assert all(torch.equal(a, b) for a, b in zip(before, params(model)))


def test_injected_inf_rolls_back_to_the_last_evaluation(byte_tok):
    model = tiny_model(byte_tok.n_vocab)
    train, val = loaders(byte_tok)
    cfg = TrainConfig(max_steps=50, lr=1e-3, eval_interval=2, eval_batches=1, sample_tokens=1)
    snapshot = {}

    def sabotage():  # runs between steps: remember step 2's weights, then break one at step 3
        if seen and seen[-1].step == 2 and not snapshot:
            snapshot.update({k: v.clone() for k, v in model.state_dict().items()})
        if seen and seen[-1].step == 3:
            with torch.no_grad():
                model.out_head.weight[0, 0] = float("inf")
        return False

    seen = []
    for ev in train_model(model, train, val, cfg, stop=sabotage):
        seen.append(ev)
    last = seen[-1]
    assert last.status == "diverged" and "step 4" in last.reason and "rolled back to step 2" in last.reason
    assert all(torch.equal(v, snapshot[k]) for k, v in model.state_dict().items())


def test_an_infinite_gradient_stops_the_run_without_clipping_and_rolls_back(byte_tok):
    """The gradient is checked on every step, also when it is not clipped."""
    model = tiny_model(byte_tok.n_vocab)
    train, val = loaders(byte_tok)
    cfg = TrainConfig(max_steps=50, lr=1e-3, grad_clip=None, eval_interval=2, eval_batches=1, sample_tokens=1)
    seen, snapshot = [], {}

    def poison(grad):  # a finite loss whose gradient is infinite, from step 5 on
        return grad * float("inf") if seen and seen[-1].step >= 4 else grad

    def remember():  # between steps: keep step 4's weights (its evaluation)
        if seen and seen[-1].step == 4 and not snapshot:
            snapshot.update({k: v.clone() for k, v in model.state_dict().items()})
        return False

    model.out_head.weight.register_hook(poison)
    for ev in train_model(model, train, val, cfg, stop=remember):
        seen.append(ev)
    last = seen[-1]
    assert last.status == "diverged" and last.step == 4
    assert "the gradient became" in last.reason and "step 5" in last.reason and "rolled back to step 4" in last.reason
    assert all(torch.equal(v, snapshot[k]) for k, v in model.state_dict().items())


def test_train_model_steps_are_the_books_train_model_simple_steps(byte_tok, capsys):
    """No clipping, a constant learning rate, no dropout, batches in order: the one loop's
    evaluations after every step are the losses the book's loop gives evaluating every step."""
    def run_ours():
        model = tiny_model(byte_tok.n_vocab)
        train, val = loaders(byte_tok, shuffle=False)
        cfg = TrainConfig(max_steps=1000, num_epochs=2, lr=1e-3, weight_decay=0.1, grad_clip=None,
                          eval_interval=1, eval_batches=2)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
        evals = [e for e in train_model(model, train, val, cfg, optimizer=optimizer) if e.is_eval]
        return [e.train_loss for e in evals[1:]], [e.val_loss for e in evals[1:]], [e.tokens_seen for e in evals[1:]]

    def run_books():
        model = tiny_model(byte_tok.n_vocab)
        train, val = loaders(byte_tok, shuffle=False)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
        return train_model_simple(model, train, val, optimizer, "cpu", num_epochs=2, eval_freq=1, eval_iter=2,
                                  start_context="The", tokenizer=byte_tok)

    ours, books = run_ours(), run_books()
    assert len(books[0]) == 2 * len(loaders(byte_tok, shuffle=False)[0]) > 4
    assert ours == books  # train losses, validation losses and tokens seen, step by step


def test_bad_settings_and_empty_data_raise(byte_tok):
    model = tiny_model(byte_tok.n_vocab)
    train, val = loaders(byte_tok)
    for bad in (TrainConfig(lr=0), TrainConfig(lr=-1), TrainConfig(lr=float("nan")), TrainConfig(max_steps=0),
                TrainConfig(eval_interval=0), TrainConfig(grad_clip=0)):
        with pytest.raises(ValueError):
            next(train_model(model, train, val, bad))
    empty = create_dataloader_v1("short", batch_size=4, max_length=32, stride=32, tokenizer=byte_tok)
    with pytest.raises(ValueError, match="too short"):
        next(train_model(model, empty, val, TrainConfig()))


def test_warmup_then_cosine_schedule():
    cfg = TrainConfig(lr=1e-3, warmup_steps=10, cosine_decay=True, min_lr=1e-4)
    assert lr_at(0, cfg, 110) == pytest.approx(1e-4)
    assert lr_at(9, cfg, 110) == pytest.approx(1e-3)
    assert lr_at(60, cfg, 110) == pytest.approx((1e-3 + 1e-4) / 2)
    assert lr_at(110, cfg, 110) == pytest.approx(1e-4)
    assert lr_at(500, TrainConfig(lr=2e-3), 110) == 2e-3


def test_train_model_simple_gives_the_books_losses_at_the_books_steps(capsys):
    """The chapter 5 recipe in miniature (dropout 0.1, shuffled windows, torch.manual_seed(123)):
    the losses and token counts the book's own train_model_simple printed for it (written by
    tests/data/make_book_schedule.py with llms-from-scratch 1.0.19) at steps 1, 6, 11, …"""
    from llm_core.model import GPTModel
    from llm_core.tokenizers import gpt2_tokenizer

    ref = json.loads((DATA / "book_schedule.json").read_text())
    text = (DATA / "book_schedule_text.txt").read_text(encoding="utf-8")
    cfg, split, n = ref["config"], int(ref["train_ratio"] * len(text)), ref["config"]["context_length"]
    tok = gpt2_tokenizer()
    torch.manual_seed(123)
    train = create_dataloader_v1(text[:split], batch_size=ref["batch_size"], max_length=n, stride=n,
                                 drop_last=True, shuffle=True, tokenizer=tok)
    val = create_dataloader_v1(text[split:], batch_size=ref["batch_size"], max_length=n, stride=n,
                               drop_last=False, shuffle=False, tokenizer=tok)
    assert len(train) == ref["train_batches_per_epoch"]
    torch.manual_seed(123)
    model = GPTModel(GPTConfig(**cfg))
    optimizer = torch.optim.AdamW(model.parameters(), lr=ref["lr"], weight_decay=ref["weight_decay"])
    train_losses, val_losses, tokens = train_model_simple(
        model, train, val, optimizer, "cpu", num_epochs=ref["num_epochs"], eval_freq=ref["eval_freq"],
        eval_iter=ref["eval_iter"], start_context="Every effort moves you", tokenizer=tok)
    assert tokens == ref["tokens_seen"]   # one batch (2 × 16) after step 1, then every 5 steps
    assert train_losses == pytest.approx(ref["train_losses"], abs=2e-5)
    assert val_losses == pytest.approx(ref["val_losses"], abs=2e-5)
    printed = capsys.readouterr().out
    assert "Ep 1 (Step 000000): Train loss" in printed and "Ep 3 (Step 000025)" in printed
    assert printed.count("Every effort moves you") == ref["num_epochs"]  # a sample after each epoch


def test_device_choice():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device().type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_pretrain_cli_writes_a_loadable_checkpoint(tmp_path, capsys):
    from llm_core.pretrain import main

    corpus_file = tmp_path / "corpus.txt"
    corpus_file.write_text(TEXT * 3, encoding="utf-8")
    out = tmp_path / "ckpt"
    rc = main(["--text-file", str(corpus_file), "--vocab-size", "300", "--layers", "1", "--heads", "2",
               "--emb-dim", "32", "--context", "16", "--steps", "12", "--batch-size", "4", "--warmup", "2",
               "--eval-interval", "4", "--eval-batches", "1", "--out", str(out), "--save-every", "4"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert printed.count("step ") >= 4 and "saved" in printed
    model, tok, meta = load_checkpoint(out)
    assert tok.n_vocab == model.cfg.vocab_size <= 300
    assert meta["command"].startswith("python -m llm_core.pretrain --text-file")
    assert meta["parameters"] == model.num_parameters()
    assert meta["status"] == "finished" and meta["total_steps_run"] == 12
    assert math.isfinite(meta["val_loss"]) and meta["perplexity"] == pytest.approx(math.exp(meta["val_loss"]))
    assert meta["perplexity_full"] == pytest.approx(math.exp(meta["val_loss_full"]))
    assert meta["corpus"]["characters"] == len(TEXT * 3) and meta["corpus"]["tokens"] > 0
    assert len(meta["samples"]) == 3 and all(s["greedy"].startswith(s["prompt"]) for s in meta["samples"])
    report = (out / "TRAINING.md").read_text()
    assert meta["command"] in report and f"{meta['parameters']:,}" in report
    assert meta["samples"][0]["greedy"].strip() in report
    assert "| license | the weights: MIT" in report   # the card says the weights' license


@pytest.mark.parametrize("scale", [1e-3, 0.2, 50.0])  # norms ~0.004 and ~0.7 (under 1), ~170 (over)
def test_gradient_norm_and_clipping_are_clip_grad_norm_bit_for_bit(scale):
    """The step's clipping skips clip_grad_norm_'s multiply by 1.0 when the norm is under the
    limit; the norm and the gradients it leaves are the same bit for bit either way."""
    from llm_core.training import _finite_grad_norm

    cfg = GPTConfig(vocab_size=40, context_length=8, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.0)
    ours, ref = build_untrained(cfg), build_untrained(cfg)
    gen = torch.Generator().manual_seed(2)
    for a, b in zip(ours.parameters(), ref.parameters()):
        a.grad = torch.randn(a.shape, generator=gen) * scale * 0.05
        b.grad = a.grad.clone()
    expected = float(torch.nn.utils.clip_grad_norm_(list(ref.parameters()), 1.0))
    assert _finite_grad_norm(ours, 1.0) == expected
    assert all(torch.equal(a.grad, b.grad) for a, b in zip(ours.parameters(), ref.parameters()))
    clipped = math.sqrt(sum(float(a.grad.square().sum()) for a in ours.parameters()))
    assert clipped == pytest.approx(min(expected, 1.0), rel=1e-5)   # over the limit: clipped to it
    assert _finite_grad_norm(ours, None) == pytest.approx(clipped, rel=1e-6)  # no clip: the norm only
