"""Fine-tuning loops: classification beats chance, instruction tuning learns, caps and guards hold."""
import math
import random
import threading

import pytest
import torch

from llm_core.config import GPTConfig
from llm_core.finetune import (
    MIN_INSTRUCTIONS,
    FinetuneError, FinetuneSettings, answer_score, finetune, predict_proba, respond,
)
from llm_core.instruct_data import ClassificationData, InstructionData
from llm_core.lora import LoRAError, load_adapter, read_adapter
from llm_core.model import build_untrained
from llm_core.tokenizers import bpe_from_merges

# A byte-level tokenizer (256 bytes + <|endoftext|>) keeps the output head small and the tests fast.
TOK = bpe_from_merges("bytes", {bytes([i]): i for i in range(256)})
CFG = GPTConfig(vocab_size=TOK.n_vocab, context_length=64, emb_dim=32, n_heads=2, n_layers=2, drop_rate=0.0)


def _base(seed=1, context_length=64):
    # instruction prompts are ~150 bytes: those tests need a longer context
    return build_untrained(CFG.with_(context_length=context_length), seed=seed)


def _colours_vs_animals(n=160, seed=0) -> ClassificationData:
    rng = random.Random(seed)
    groups = ("red green blue pink".split(), "cat dog cow owl".split())
    texts, labels = [], []
    for i in range(n):
        y = i % 2
        texts.append(" ".join(rng.choice(groups[y]) for _ in range(rng.randint(2, 4))))
        labels.append(y)
    return ClassificationData("colours vs animals", texts, labels, ["colour", "animal"])


QUESTIONS = {"What colour is the sky?": "blue", "What colour is grass?": "green"}


def _colour_questions(n=120, seed=0) -> InstructionData:
    rng = random.Random(seed)
    entries = []
    for _ in range(n):
        q = rng.choice(sorted(QUESTIONS))
        entries.append({"instruction": q, "input": "", "output": QUESTIONS[q], "check": "exact"})
    return InstructionData("colours", entries)


def _run(base, data, **kw):
    settings = FinetuneSettings(**kw)
    events = list(finetune(base, TOK, data, settings, base_name="test-base"))
    return events, events[-1]


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_lora_classification_beats_chance_and_leaves_the_base_alone():
    base = _base()
    before = _state(base)
    events, last = _run(base, _colours_vs_animals(), task="classification", method="lora", rank=4, alpha=8,
                        epochs=4, max_steps=30, batch_size=8, lr=3e-3, eval_interval=10)
    assert last.done and last.status == "finished" and last.result is not None
    res = last.result
    assert res.accuracy["val"] >= 0.9 and res.accuracy["train"] >= 0.9  # chance is 0.5
    evals = [e for e in events if e.is_eval]
    assert evals[0].step == 0 and evals[-1].val_loss < evals[0].val_loss
    assert all(0 <= e.val_acc <= 1 for e in evals)
    conf = res.confusion["val"]
    assert conf[0][0] + conf[1][1] == pytest.approx(res.accuracy["val"] * sum(map(sum, conf)))
    after = _state(base)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    # LoRA trained only LoRA matrices and the new head: the copy's other weights are the base's.
    tuned = dict(res.model.named_parameters())
    torch.testing.assert_close(tuned["trf_blocks.0.att.W_query.linear.weight"], base.trf_blocks[0].att.W_query.weight)
    assert res.counts.trainable == res.counts.lora + 32 * 2 + 2
    assert res.norms[("q", 0)] > 0 and ("head", None) not in res.norms


def test_predict_proba_is_a_distribution_and_ignores_batch_padding():
    base = _base()
    _, last = _run(base, _colours_vs_animals(), task="classification", method="last-block",
                   epochs=2, max_steps=30, lr=3e-3, eval_interval=50)
    res = last.result
    probs = res.predict_proba("cat owl cat")
    assert set(probs) == {"colour", "animal"} and sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
    assert probs["animal"] > 0.5 and res.predict_proba("red pink blue")["colour"] > 0.5
    # same text alone or beside a longer text in a padded batch: the same logits
    from llm_core.finetune import classification_batches, classification_logits, encode_for_classification
    enc = [encode_for_classification(TOK, t, 64) for t in ("cat", "red green blue pink red green")]
    inputs, idx, _ = next(classification_batches(enc, [1, 0], 2, TOK.eot_id, shuffle=False))
    with torch.no_grad():
        batched = torch.softmax(classification_logits(res.model, inputs, idx)[0], -1)
    alone = predict_proba(res.model, TOK, "cat", res.label_names, 64)
    assert batched.tolist() == pytest.approx(list(alone.values()), abs=1e-5)


def test_full_finetune_changes_weights_and_reports_update_norms():
    base = _base()
    _, last = _run(base, _colours_vs_animals(80), task="classification", method="full", epochs=1, max_steps=5,
                   lr=1e-3, eval_interval=5)
    res = last.result
    assert res.counts.trainable == res.counts.total and res.counts.lora == 0
    assert res.norms[("ff_in", 1)] > 0


@pytest.mark.slow
def test_instruction_tuning_learns_and_scores_before_after(tmp_path):
    base = _base(context_length=192)
    events, last = _run(base, _colour_questions(), task="instruction", method="lora", rank=8, alpha=16,
                        targets=("all",), epochs=6, max_steps=40, batch_size=8, lr=1e-2, eval_interval=20,
                        n_samples=2, n_score=6, sample_tokens=6, mask_instruction=True)
    res = last.result
    evals = [e for e in events if e.is_eval]
    assert evals[-1].val_loss < evals[0].val_loss - 1.0
    assert len(evals[-1].samples) == 2 and {"instruction", "input", "expected", "response"} <= set(evals[-1].samples[0])
    before, after = res.scores["before"], res.scores["after"]
    assert before["n"] == after["n"] == 6 and before["n_exact"] == 6
    assert before["exact_match"] == 0.0 and after["exact_match"] >= 0.8
    assert len(res.comparisons) == 6 and res.comparisons[0]["expected"] in {"blue", "green"}
    # the adapter alone reproduces the tuned model on a fresh copy of the base
    path = res.save_adapter(tmp_path / "echo.safetensors")
    tensors, info = read_adapter(path)
    assert info.base_model == "test-base" and info.extra["scores"]["after"]["n"] == 6
    assert all(".lora." in k for k in tensors)
    loaded, _ = load_adapter(path, base)
    entry = {"instruction": "What colour is grass?", "input": ""}
    assert respond(loaded, TOK, entry, 6) == respond(res.model, TOK, entry, 6)
    with pytest.raises(LoRAError):
        load_adapter(path, _base(seed=2, context_length=192))


def test_stop_event_ends_the_run_with_a_result():
    stop = threading.Event()
    events = []
    for ev in finetune(_base(), TOK, _colours_vs_animals(), FinetuneSettings(epochs=5, max_steps=100, eval_interval=100),
                       stop=stop):
        events.append(ev)
        if ev.step == 3 and not ev.done:
            stop.set()  # checked before the next step: the run ends after step 3
    last = events[-1]
    assert last.done and last.status == "stopped" and "stopped by request" in last.reason
    assert last.step == 3 and max(ev.step for ev in events) == 3
    assert last.result is not None and last.result.status == "stopped"
    # a stop callable works the same way
    calls = {"n": 0}

    def stop_after_3():
        calls["n"] += 1
        return calls["n"] > 3
    events = list(finetune(_base(), TOK, _colours_vs_animals(), FinetuneSettings(epochs=5, max_steps=100),
                           stop=stop_after_3))
    assert events[-1].status == "stopped" and events[-1].step == 3 and events[-1].result is not None


def test_time_cap_is_enforced_inside_the_loop():
    events = list(finetune(_base(), TOK, _colours_vs_animals(), FinetuneSettings(epochs=50, max_steps=5000,
                                                                                  max_seconds=0.001)))
    assert events[-1].status == "time_limit" and events[-1].step < 5000


def test_nan_loss_stops_without_a_result():
    base = _base()
    with torch.no_grad():
        base.trf_blocks[0].norm1.scale[0] = float("nan")
    events = list(finetune(base, TOK, _colours_vs_animals(), FinetuneSettings(max_steps=10)))
    assert events[-1].status == "diverged" and events[-1].result is None and "Nothing was saved" in events[-1].reason


def test_injected_inf_after_an_evaluation_rolls_back_and_the_result_is_that_model(monkeypatch):
    """The fine-tuning run is the shared loop: a weight broken after step 2's evaluation stops the
    run at step 3, which says what broke; the tuned copy goes back to step 2 and is the result."""
    import llm_core.finetune as ft

    tuned, snapshot, seen = {}, {}, []

    def keep_copy(*a, **kw):
        tuned["model"] = real_prepare(*a, **kw)
        return tuned["model"]

    def sabotage():  # runs between steps: remember step 2's weights, then break one
        model = tuned["model"]
        if seen and seen[-1].step == 2 and not snapshot:
            snapshot.update({k: v.clone() for k, v in model.state_dict().items()})
            with torch.no_grad():
                model.out_head.weight[0, 0] = float("inf")
        return False

    real_prepare = ft.prepare_model
    monkeypatch.setattr(ft, "prepare_model", keep_copy)
    s = FinetuneSettings(method="full", max_steps=20, eval_interval=2, lr=1e-3)
    for ev in finetune(_base(), TOK, _colours_vs_animals(), s, stop=sabotage):
        seen.append(ev)
    last = seen[-1]
    assert last.status == "diverged" and last.step == 2 and last.rolled_back_to == 2
    assert "the loss became nan at step 3" in last.reason and "rolled back to step 2" in last.reason
    res = last.result
    assert res is not None and res.status == "diverged" and res.model is tuned["model"]
    assert all(torch.equal(v, snapshot[k]) for k, v in res.model.state_dict().items())  # the inf is gone
    step2 = next(e for e in seen if e.is_eval and e.step == 2)
    assert res.val_loss == step2.val_loss and res.info.extra["steps"] == 2
    assert math.isfinite(res.accuracy["val"])


def test_instruction_steps_are_the_books_train_model_simple_steps(capsys):
    """Full instruction tuning without clipping is chapter 7's training: the validation losses after
    every step are those of the book's loop (train_model_simple, evaluating every step) on the
    book's data pipeline (the 85/10/5 split, InstructionDataset, the collate, a shuffled DataLoader
    with the run's seed), with the same optimizer."""
    import copy

    from torch.utils.data import DataLoader

    from llm_core.instruct_data import InstructionDataset, instruction_collate, split_instructions
    from llm_core.training import make_optimizer, train_model_simple

    base, data = _base(context_length=192), _colour_questions(60)
    s = FinetuneSettings(task="instruction", method="full", epochs=1, max_steps=1000, batch_size=4, lr=1e-3,
                         weight_decay=0.1, grad_clip=None, eval_interval=1, eval_batches=2, n_samples=0, n_score=0,
                         max_seconds=None, seed=5)
    evals = [e for e in finetune(base, TOK, data, s) if e.is_eval]

    train_e, _, val_e = split_instructions(data.entries)
    collate = instruction_collate(TOK.eot_id, 192, mask_prompt=False)
    train = DataLoader(InstructionDataset(train_e, TOK), batch_size=4, shuffle=True, collate_fn=collate,
                       generator=torch.Generator().manual_seed(5))
    val = DataLoader(InstructionDataset(val_e, TOK), batch_size=4, shuffle=False, collate_fn=collate)
    model = copy.deepcopy(base)
    _, book_val, book_tokens = train_model_simple(model, train, val, make_optimizer(model.parameters(), 1e-3, 0.1),
                                                  "cpu", num_epochs=1, eval_freq=1, eval_iter=2,
                                                  start_context="What", tokenizer=TOK)
    assert len(book_val) == len(train) == len(evals) - 1 > 5
    assert [e.val_loss for e in evals[1:]] == book_val
    assert [e.tokens_seen for e in evals[1:]] == book_tokens


@pytest.mark.parametrize("kw,match", [
    (dict(rank=0), "rank"), (dict(alpha=0), "alpha"), (dict(alpha=float("nan")), "alpha"),
    (dict(targets=()), "at least one"), (dict(method="magic"), "method"), (dict(task="chat"), "task"),
    (dict(lr=float("inf")), "learning rate"), (dict(batch_size=0), "batch size"), (dict(max_steps=10**9), "steps"),
    (dict(max_seconds=10**9), "time limit"),
])
def test_bad_settings(kw, match):
    with pytest.raises(FinetuneError, match=match):
        next(finetune(_base(), TOK, _colours_vs_animals(), FinetuneSettings(**kw)))


def test_bad_data():
    tiny = ClassificationData("x", ["a", "b"], [0, 1], ["a", "b"])
    with pytest.raises(FinetuneError, match="too few"):
        next(finetune(_base(), TOK, tiny, FinetuneSettings()))
    with pytest.raises(FinetuneError, match="instruction data set"):
        next(finetune(_base(), TOK, _colours_vs_animals(), FinetuneSettings(task="instruction")))
    with pytest.raises(FinetuneError, match=f"too few.*at least {MIN_INSTRUCTIONS}\\)"):
        next(finetune(_base(), TOK, InstructionData("x", _colour_questions(MIN_INSTRUCTIONS - 1).entries),
                      FinetuneSettings(task="instruction")))
    # ...and the minimum the message names is enough
    assert next(finetune(_base(), TOK, InstructionData("x", _colour_questions(MIN_INSTRUCTIONS).entries),
                         FinetuneSettings(task="instruction"))) is not None
    with pytest.raises(FinetuneError, match="head alone"):
        next(finetune(_base(), TOK, _colours_vs_animals(), FinetuneSettings(targets=("head",))))


def test_answer_score():
    assert answer_score("Os.", "os", "exact") == 1.0
    assert answer_score("os.path", "os", "exact") == 0.0
    assert answer_score("Return the size of a file.", "Return the size of a file", "similar") == 1.0
    assert 0 < answer_score("Return the size", "Return the size of a file", "similar") < 1
    assert answer_score("", "anything", "similar") == 0.0


@pytest.mark.parametrize("scaling, expected", [("alpha/rank", 8 / 4), ("alpha", 8.0)])
def test_lora_scaling_book_alpha_or_alpha_over_rank(scaling, expected):
    """The book's LoRALayer multiplies x·A·B by α; peft (and the default) by α/r. The saved adapter
    carries the α that gives the same scale in the α/r convention, so it reloads identically."""
    from llm_core.finetune import adapter_info, prepare_model
    from llm_core.lora import apply_adapter, adapter_state, lora_layers, model_fingerprint

    s = FinetuneSettings(rank=4, alpha=8, lora_scaling=scaling, targets=("q", "v"))
    base = _base()
    model = prepare_model(base, s, num_classes=2, device="cpu")
    layers = lora_layers(model)
    assert layers and all(layer.lora.scaling == expected for layer in layers.values())
    lora = next(iter(layers.values())).lora
    with torch.no_grad():
        lora.B.normal_()
        x = torch.randn(3, lora.A.shape[0])
        assert torch.allclose(lora(x), expected * (x @ lora.A @ lora.B), atol=1e-5)
    info = adapter_info("tiny", model_fingerprint(base, skip=("out_head",)), s, 2, {})
    reloaded = apply_adapter(base, adapter_state(model), info)
    assert all(layer.lora.scaling == expected for layer in lora_layers(reloaded).values())
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.allclose(reloaded(ids), model.eval()(ids), atol=1e-6)


def test_bad_lora_scaling_is_refused():
    assert any("LoRA scaling" in p for p in FinetuneSettings(lora_scaling="alpha*2").problems())


def test_the_books_appendix_e_count_and_ours_come_from_the_models():
    from llm_core.finetune import book_lora_counts

    counts = book_lora_counts(16)
    # the book's printed numbers (GPT-2 small, 2-class head, rank 16)
    assert counts["before"] == 124_441_346 and counts["book"] == 2_666_528
    # ours trains the new 768×2 head (+ bias) in full instead of LoRA on it: 16·(768+2) fewer, 1,538 more
    assert counts["ours"] == 2_655_746


def test_batches_are_pinned_for_a_gpu_only(monkeypatch):
    """A run on a CUDA GPU reads its batches from pinned host memory (copied asynchronously);
    on the CPU the loaders are as before. Built only: iterating pinned loaders needs a GPU."""
    from llm_core.finetune import prepare_task

    questions, labelled = _colour_questions(), _colours_vs_animals()
    instruct, classify = FinetuneSettings(task="instruction", batch_size=4), FinetuneSettings(batch_size=4)
    for device, pinned in ((torch.device("cuda"), True), (torch.device("cpu"), False), (None, False)):
        task = prepare_task(questions, TOK, instruct, 64, device)
        assert [loader.pin_memory for loader in (task.batches, task.train_eval_loader, task.val_loader)] == [pinned] * 3
        assert prepare_task(labelled, TOK, classify, 64, device).batches.pin_memory is pinned
    seen = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self, *a, **k: seen.append(self) or self.clone())
    cls = prepare_task(labelled, TOK, classify, 64, torch.device("cuda"))
    batches = list(cls.batches)
    assert len(seen) == 3 * len(batches) > 0  # inputs, last positions, labels of every batch


def test_cosine_lr_decays_to_a_tenth_along_the_steps_and_the_default_stays_constant():
    data = _colours_vs_animals(80)
    kw = dict(task="classification", method="full", epochs=1, max_steps=6, lr=1e-3, eval_interval=1,
              max_seconds=None)
    flat, _ = _run(_base(), data, **kw)
    events, last = _run(_base(), data, cosine=True, **kw)
    # an evaluation after step k reports the lr that step k (0-based k-1) trained with
    lrs = [ev.lr for ev in events if ev.is_eval and ev.step > 0]
    assert len(lrs) == 6 and all(b < a for a, b in zip(lrs, lrs[1:])), lrs
    assert lrs[0] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(1e-4 + 0.45e-3 * (1 + math.cos(math.pi * 5 / 6)))
    assert {ev.lr for ev in flat if ev.step > 0} == {1e-3}
    assert last.result is not None


def test_rehearsal_pieces_end_on_a_whole_paragraph_and_skip_what_cannot():
    from llm_core.finetune import rehearsal_pieces

    texts = ["mod.f(a, b)\n\nAdd a and b.\n\n" + "x" * 200, "mod.g()\n\nDo g.", "y" * 100 + "\n\nnever fits"]
    pieces = rehearsal_pieces(texts, TOK, 40)
    assert [TOK.decode(p) for p in pieces] == ["mod.f(a, b)\n\nAdd a and b.", "mod.g()\n\nDo g."]


def test_instruction_tuning_replays_rehearsal_texts_with_the_loss_on_every_token():
    from llm_core.finetune import InstructionTask

    data = _colour_questions(120)
    data.rehearsal = tuple(f"colours.c{i}()\n\nPaint colour {i}." for i in range(200))
    plain = InstructionTask(data, TOK, FinetuneSettings(task="instruction", mask_instruction=True), 256)
    task = InstructionTask(data, TOK, FinetuneSettings(task="instruction", mask_instruction=True, rehearsal=0.5), 256)
    ds = task.batches.dataset
    assert task.n_instructions == plain.n_instructions == len(plain.batches.dataset)
    assert task.n_rehearsal == round(0.5 * task.n_instructions) == len(ds) - task.n_instructions
    replayed = [TOK.decode(ds.encoded[i]) for i in range(task.n_instructions, len(ds))]
    assert all(t.startswith("colours.c") for t in replayed) and len(set(replayed)) == len(replayed)
    assert set(ds.prompt_lengths[task.n_instructions:]) == {0}
    with pytest.raises(FinetuneError, match="rehearsal must be between 0 and 10"):
        next(finetune(_base(), TOK, data, FinetuneSettings(task="instruction", rehearsal=-1)))


def test_rehearsal_sections_are_the_training_split_of_the_standard_library():
    from llm_core.doc_corpus import is_held_out
    from llm_core.instruct_data import rehearsal_sections

    sections = rehearsal_sections()
    modules = {s.split("\n", 1)[0].removeprefix("Module ") for s in sections if s.startswith("Module ")}
    assert "json" in modules and len(sections) > 1000
    assert not any(is_held_out("pydoc", m) for m in modules)
    assert any(s.startswith("json.dumps(") for s in sections)
