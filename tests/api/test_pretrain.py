"""Pretrain tab: the streaming endpoint, stop, save, bad input, one run at a time."""
import math
import re

import gradio as gr
import pytest
import torch
from gradio_client.exceptions import AppError

import tabs.pretrain as P
from llm_core.registry import load_model
from llm_core.runs import run_label, saved_name
from tabs.common import TRAINING_SLOT
from tabs.guard import owner_of

TEXT = "Every effort moves you toward the sunlit terraces of the palace. " * 120
SMALL = dict(size="custom", layers=1, heads=2, dims=16, context=16)


def _args(steps=12, text=TEXT, lr=3e-3, **over):
    a = dict(corpus=P.CORPUS_PASTE, upload=None, pasted=text, tok=P.TOK_GPT2, **SMALL, steps=steps, batch=4,
             lr=lr, warmup=2, cosine=True, eval_interval=4, seed=1, prompt="Every effort",
             x_axis="steps", log_scale=False, smoothing=0.5)
    a.update(over)
    return list(a.values())


def _steps(status: str) -> int:
    return int(re.search(r"step ([\d,]+) /", status).group(1).replace(",", ""))


def test_streaming_endpoint_yields_increasing_steps_and_finishes(client):
    job = client.submit(*_args(), api_name="/pretrain")
    outputs = list(job)
    assert len(outputs) >= 2
    steps = [_steps(o[1]) for o in outputs]
    assert steps == sorted(steps) and steps[-1] == 12
    assert "finished" in outputs[-1][1]
    assert "[step 12]" in outputs[-1][2]  # the newest sample is listed first


def test_untrained_preview_reports_loss_near_ln_vocab():
    out = P.preview_untrained(P.CORPUS_PASTE, None, TEXT, P.TOK_GPT2, *SMALL.values(), 4, "Every", 1)
    loss = float(re.search(r"initial loss \*\*([\d.]+)\*\*", out).group(1))
    assert abs(loss - math.log(50257)) < 0.7


def test_the_tab_pins_its_batches_for_a_gpu_only():
    """Training on a CUDA GPU reads batches from pinned host memory (async copies); the CPU's
    loaders and the untrained preview (always the CPU) are as before. Built only: no GPU here."""
    args = (P.CORPUS_PASTE, None, TEXT, P.TOK_GPT2, *SMALL.values(), 4)
    for device, pinned in (("cuda", True), (torch.device("cpu"), False)):
        _, _, train_loader, val_loader, *_ = P._prepare(*args, device)
        assert (train_loader.pin_memory, val_loader.pin_memory) == (pinned, pinned)
    assert not P._prepare(*args)[2].pin_memory


def test_stop_keeps_the_partial_model_and_save_makes_it_loadable(tmp_path):
    gen = P.pretrain(*_args(steps=500), [])
    first = [next(gen) for _ in range(3)]
    P.stop_training(None)
    rest = list(gen)
    status = rest[-1][1]
    assert "stopped" in status and _steps(status) < 500
    assert len(first[-1][3]) == 1  # one run on the chart
    msg = P.save_trained("pytest-partial", True, None)
    name = saved_name(owner_of(None), "pytest-partial")
    assert "pytest-partial" in msg
    # the header's picker lists it once the save succeeded (a follow-up event, see tabs/pretrain.py)
    assert (run_label(name), name) in P.picker_choices(None)["choices"]
    bundle = load_model(name)
    assert bundle.config.emb_dim == 16 and bundle.meta["steps"] == _steps(status)
    with pytest.raises(gr.Error, match="already have a run"):
        P.save_trained("pytest-partial", False, None)


@pytest.mark.parametrize("over, message", [
    (dict(text="   "), "empty"),
    (dict(text="short text"), "one batch needs"),
    (dict(heads=3, dims=16), "divisible"),
    (dict(lr=0), "Learning rate"),
    (dict(steps=10**9), "Steps"),
    (dict(layers=0), "Layers|minimum value 1"),  # Gradio checks minimum= itself
    (dict(size="gpt2-xl"), "not in the list of choices|Unknown model size"),
])
def test_bad_input_gives_clear_messages(client, over, message):
    with pytest.raises(AppError, match=message):
        client.predict(*_args(**over), api_name="/pretrain")


def test_nan_learning_rate_is_refused_on_the_server():  # JSON cannot even carry NaN: call the handler
    with pytest.raises(gr.Error, match="Learning rate"):
        next(P.pretrain(*_args(lr=float("nan")), []))


def _last_sample(temperature) -> str:
    out = None
    for out in P.pretrain(*_args(steps=8), [], temperature):
        pass
    return out[2].split("\n[step ")[0]  # newest first: the final evaluation's sample


def test_live_samples_are_greedy_at_zero_and_seeded_above():
    greedy, sampled = _last_sample(0.0), _last_sample(1.0)
    assert greedy.startswith("[step 8] Every effort") and sampled.startswith("[step 8] Every effort")
    assert _last_sample(1.0) == sampled   # the run's seed fixes the sampled text
    assert sampled != greedy              # 24 tokens drawn from a barely trained model's probabilities
    with pytest.raises(gr.Error, match="Sample temperature"):
        next(P.pretrain(*_args(), [], 5.0))


def test_second_run_is_refused_while_one_runs():
    assert TRAINING_SLOT.acquire(blocking=False)
    try:
        with pytest.raises(gr.Error, match="Another training run"):
            next(P.pretrain(*_args(), []))
    finally:
        TRAINING_SLOT.release()


def test_invalid_checkpoint_names_are_refused():
    for name in ("", "../escape", "a/b", "x" * 41):
        with pytest.raises(gr.Error, match="Name the checkpoint"):
            P.save_trained(name, False, None)


def test_gpt2_comparison_offline_is_a_message_not_a_crash(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    table = P.compare_with_gpt2("gpt2-medium", P.CORPUS_PASTE, None, TEXT, "untrained:tiny", None,
                                progress=lambda *a, **k: None)
    assert "unavailable" in table and "untrained:tiny" in table
    row = [line for line in table.splitlines() if line.startswith("| untrained:tiny")][0]
    assert float(row.split("|")[2]) > 9  # an untrained GPT-2-vocab model is near ln(50257)


def test_the_loss_chart_without_runs_is_a_note_at_any_setting():
    # toggling log scale or the x axis before the first run redraws the chart: still no empty axis
    for fig in (P.loss_figure([]), P.loss_figure([], "steps", True, 0.9)):
        assert not fig.data and not fig.layout.xaxis.visible and not fig.layout.yaxis.visible
        assert "Start training" in fig.layout.annotations[0].text
