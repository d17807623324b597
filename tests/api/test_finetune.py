"""Fine-tune tab through the API: streaming runs, try-it endpoints, adapters, bad input, one run at a time."""
import json
import random
import re
from pathlib import Path

import gradio as gr
import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError

import tabs.finetune as F
from tabs.common import TRAINING_SLOT


def _easy_csv(tmp_path, n=48, classes=("colour", "animal")) -> str:
    rng = random.Random(0)
    words = {"colour": "red green blue pink".split(), "animal": "cat dog cow owl".split()}
    rows = ["text,label"] + [f"{' '.join(rng.choice(words[c]) for _ in range(3))},{c}"
                             for i in range(n) for c in [classes[i % len(classes)]]]
    path = tmp_path / "easy.csv"
    path.write_text("\n".join(rows) + "\n")
    return str(path)


def _instructions_json(tmp_path, n=24) -> str:
    entries = [{"instruction": "What colour is the sky?", "input": "", "output": "blue"} for _ in range(n)]
    path = tmp_path / "ins.json"
    path.write_text(json.dumps(entries))
    return str(path)


def _args(upload, task=F.TASK_CLS, dataset=F.DS_CLS_UPLOAD, steps=6, **over):
    a = dict(task=task, dataset=dataset, upload=handle_file(upload) if upload else None, method=F.M_LORA, rank=4,
             alpha=8, targets=["q", "v"], epochs=3, steps=steps, batch=8, lr=3e-3, eval_interval=3, seed=1,
             max_length=64, mask=False, log_scale=False, smoothing=0.5)
    a.update(over)
    return list(a.values())


def _step(status: str) -> int:
    return int(re.search(r"step ([\d,]+) /", status).group(1).replace(",", ""))


def test_classification_run_streams_and_finishes_with_an_adapter(client, tmp_path):
    job = client.submit(*_args(_easy_csv(tmp_path)), api_name="/finetune")
    outputs = list(job)
    assert len(outputs) >= 2
    steps = [_step(o[0]) for o in outputs]
    assert steps == sorted(steps) and steps[-1] == 6
    status, plot, samples, results, confusion, norms, comparison, adapter = outputs[-1]
    assert "finished" in status and "tokens/s" in status
    assert "Accuracy" in results and "trainable of" in results
    assert plot is not None and confusion is not None and norms is not None
    assert "true label" in comparison
    assert adapter and Path(adapter).stat().st_size > 0
    probs = client.predict("cat dog owl", api_name="/finetune_classify")
    assert {c["label"] for c in probs["confidences"]} == {"colour", "animal"}
    odd = client.predict("<|endoftext|> 🙂 caf\u00e9 \u202e", api_name="/finetune_classify")
    assert abs(sum(c["confidence"] for c in odd["confidences"]) - 1) < 1e-4


def test_instruction_run_scores_before_and_after(client, tmp_path):
    outputs = list(client.submit(*_args(_instructions_json(tmp_path), task=F.TASK_INS, dataset=F.DS_INS_UPLOAD,
                                        steps=2, eval_interval=1, max_length=96), api_name="/finetune"))
    status, _, samples, results, _, norms, comparison, adapter = outputs[-1]
    assert "finished" in status
    assert "before tuning" in results and "after tuning" in results
    assert "held-out instruction" in samples and "base model" in comparison
    base, tuned = client.predict("What colour is the sky?", "", api_name="/finetune_ask")
    assert isinstance(base, str) and isinstance(tuned, str)


def test_adapter_download_loads_back(client, tmp_path):
    outputs = list(client.submit(*_args(_easy_csv(tmp_path), steps=2), api_name="/finetune"))
    adapter = outputs[-1][7]
    msg = client.predict(handle_file(adapter), api_name="/finetune_load_adapter")
    assert "Loaded a **lora** adapter (classification)" in msg
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(AppError, match="adapter"):
        client.predict(handle_file(str(junk)), api_name="/finetune_load_adapter")


@pytest.mark.parametrize("over,match", [
    (dict(rank=0), "LoRA rank"),
    (dict(rank=10**6), "LoRA rank"),
    (dict(alpha=0), "LoRA alpha"),
    (dict(alpha=-1), "LoRA alpha"),
    (dict(targets=[]), "at least one layer"),
    (dict(lr=0), "Learning rate"),
    (dict(steps=10**7), "Max steps"),
    (dict(batch=0), "Batch size"),
    (dict(method="magic"), "list of choices|method"),
    (dict(task="chat"), "list of choices|task"),
    (dict(dataset=F.DS_INS_BUILTIN), "not a data set for"),
])
def test_bad_settings_are_clear_errors(client, tmp_path, over, match):
    with pytest.raises(AppError, match=match):
        client.predict(*_args(_easy_csv(tmp_path), **over), api_name="/finetune")


@pytest.mark.parametrize("content,match", [
    (b"text,label\n" + b"cat,animal\n" * 20, "only one class"),
    (b"words,kind\n" + b"cat,animal\nred,colour\n" * 10, "'text' and 'label'"),
    ("text,label\ncaf\xe9,a\n".encode("latin-1") * 12, "UTF-8"),
    (b"text,label\ncat,animal\nred,colour\n", "at least 10"),
    (b"", "empty"),
])
def test_malformed_csv_uploads(client, tmp_path, content, match):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(AppError, match=match):
        client.predict(*_args(str(path)), api_name="/finetune")


def test_missing_upload_and_malformed_json(client, tmp_path):
    with pytest.raises(AppError, match="upload first"):
        client.predict(*_args(None), api_name="/finetune")
    bad = tmp_path / "bad.json"
    bad.write_text('[{"instruction": "x"}]')
    with pytest.raises(AppError, match="'output'"):
        client.predict(*_args(str(bad), task=F.TASK_INS, dataset=F.DS_INS_UPLOAD), api_name="/finetune")


def test_book_datasets_offline_say_why(client):
    with pytest.raises(AppError, match="offline|unavailable"):
        client.predict(*_args(None, dataset=F.DS_CLS_BOOK), api_name="/finetune")


def test_one_training_run_at_a_time(client, tmp_path):
    assert TRAINING_SLOT.acquire(timeout=60)
    try:
        with pytest.raises(AppError, match="Another training run"):
            client.predict(*_args(_easy_csv(tmp_path)), api_name="/finetune")
    finally:
        TRAINING_SLOT.release()


def test_try_it_without_a_run_and_stop_without_a_run():
    with pytest.raises(gr.Error, match="Train a classifier first"):
        F.try_classifier("hello", None)
    with pytest.raises(gr.Error, match="empty"):
        F.try_classifier("   ", None)
    with pytest.raises(gr.Error, match="limit"):
        F.try_classifier("x" * (F.MAX_PROMPT_CHARS + 1), None)
    assert "No fine-tuning run" in F.stop_run(None)


def test_stop_ends_a_run_early_and_keeps_the_result(tmp_path):
    from llm_core.registry import default_model_name
    args = _args(_easy_csv(tmp_path), steps=500, epochs=100)
    args[2] = _easy_csv(tmp_path)  # a plain path when calling the handler directly
    gen = F.run_finetune(*args, default_model_name(), None)
    first = next(gen)
    assert "step" in first[0]
    F.stop_run(None)
    rest = list(gen)
    status = rest[-1][0]
    assert "stopped" in status and _step(status) < 500
    assert rest[-1][7]  # the partly trained adapter is still offered


def test_parameter_counts_preview():
    from llm_core.registry import default_model_name
    md = F.parameter_counts(F.TASK_CLS, F.M_LORA, 16, 16, ["q", "k", "v", "out", "ff_in", "ff_out"],
                            default_model_name())
    assert "trainable of" in md and "**2,666,528** trainable" in md and "**2,655,746**" in md
    assert "124,441,346" in md and "multiplied by α/r = 1" in md
    book = F.parameter_counts(F.TASK_CLS, F.M_LORA, 16, 16, ["q", "v"], default_model_name(), F.SC_BOOK)
    assert "multiplied by α = 16" in book
    with pytest.raises(gr.Error, match="LoRA scaling"):
        F._settings(F.TASK_CLS, F.M_LORA, 16, 16, ["q"], 1, 1, 1, 1e-3, 1, 1, 64, False, "alpha squared")
    assert "rank" in F.parameter_counts(F.TASK_CLS, F.M_LORA, 0, 16, ["q"], default_model_name())


def test_a_diverged_run_keeps_the_earlier_result_and_adapter(tmp_path, monkeypatch):
    from llm_core.training import TrainEvent
    from tabs.session_store import SESSIONS
    from llm_core.registry import default_model_name
    args = _args(_easy_csv(tmp_path), steps=2)
    args[2] = _easy_csv(tmp_path)
    good = list(F.run_finetune(*args, default_model_name(), None))[-1]
    adapter = Path(good[7])
    saved, kept = adapter.read_bytes(), SESSIONS.result("api")
    assert kept is not None

    def diverging(*a, **kw):
        yield TrainEvent(step=1, epoch=1, tokens_seen=8, lr=1e-3, batch_loss=float("nan"), elapsed_s=0.1,
                         tokens_per_s=80.0, eta_s=None, total_steps=2, done=True, stopped=True,
                         status="diverged", reason="the loss became nan at step 1: training diverged.")
    monkeypatch.setattr(F, "finetune", diverging)
    last = list(F.run_finetune(*args, default_model_name(), None))[-1]
    assert "diverged" in last[0]
    assert SESSIONS.result("api") is kept and adapter.read_bytes() == saved


def test_a_diverged_run_rolled_back_keeps_its_rolled_back_result(tmp_path, monkeypatch):
    """A run that diverged after a good evaluation leaves that evaluation's model: stored as the
    session's result (downloadable), with the reason shown."""
    import dataclasses

    from llm_core.training import TrainEvent
    from tabs.session_store import SESSIONS
    from llm_core.registry import default_model_name
    args = _args(_easy_csv(tmp_path), steps=2)
    args[2] = _easy_csv(tmp_path)
    good = list(F.run_finetune(*args, default_model_name(), None))[-1]
    rolled_back = dataclasses.replace(SESSIONS.result("api"), status="diverged")
    reason = "the loss became nan at step 2: training diverged. The model was rolled back to step 1."

    def diverging(*a, **kw):
        yield TrainEvent(step=1, epoch=1, tokens_seen=8, lr=1e-3, batch_loss=0.5, elapsed_s=0.1,
                         tokens_per_s=80.0, eta_s=None, total_steps=2, done=True, stopped=True,
                         status="diverged", rolled_back_to=1, reason=reason, result=rolled_back)
    monkeypatch.setattr(F, "finetune", diverging)
    last = list(F.run_finetune(*args, default_model_name(), None))[-1]
    assert "diverged" in last[0] and "rolled back to step 1" in last[0]
    assert SESSIONS.result("api") is rolled_back
    assert last[7] and Path(last[7]).is_file() and last[7] != good[7]  # this run's download


def test_the_curves_without_runs_are_a_note():
    # what "Clear earlier runs" and the log/smoothing controls draw before any run
    fig = F.curves_figure([], True, 0.9)
    assert not fig.data and not fig.layout.xaxis.visible and not fig.layout.yaxis.visible
    assert "Start fine-tuning" in fig.layout.annotations[0].text
