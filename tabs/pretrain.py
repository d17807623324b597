"""Stage 6: pre-train a GPT from scratch with live loss curves; load GPT-2's weights."""
from __future__ import annotations

import math
import time
from functools import lru_cache

import gradio as gr
import plotly.graph_objects as go
import torch

from llm_core import budget
from llm_core import corpus as corpus_mod
from llm_core import runs as saved_runs
from llm_core.views.architecture_view import config_parameter_breakdown
from llm_core.config import PRESET_LABELS, PRESETS, GPTConfig
from llm_core.data import create_dataloader_v1
from llm_core.device import pin_host_memory
from llm_core.export import export_hf
from llm_core.generation import generate
from llm_core.model import build_untrained
from llm_core.registry import ModelBundle, ModelLoadError, builtin_names, forget, load_model, model_choices
from llm_core.tokenizers import gpt2_tokenizer
from llm_core.training import TrainConfig, calc_loss_loader, gpt2_init_, perplexity, pick_device, train_model
from tabs import hub_export
from tabs.common import (CPU_HEAVY, MAX_TEXT_CHARS, MAX_UPLOAD_BYTES, begin_training, check_float,
                         check_int, check_text, end_training, friendly_errors, read_text_upload)
from tabs.figures import RUN_COLORS, downsample, ema, note_figure
from tabs.guard import owner_of
from tabs.session_store import SESSIONS, session_key
from tabs.markup import md_code, md_text

# Server-side caps: a demo machine has 2 vCPUs shared by every visitor.
MAX_STEPS = 3000
MAX_SECONDS = 15 * 60
DEFAULT_SAMPLE_PROMPT = "The list"
SAMPLE_TOKENS = 24  # new tokens in each live sample
# Greedy (0, the book's printout) shows a young model's most common token, here the line break,
# for the whole default run (scripts/probe_prompts.py pretrain); sampling shows its words forming.
SAMPLE_TEMPERATURE = 1.0
MAX_SAMPLE_TEMPERATURE = 2.0
# The form's starting values: a run that finishes in about a minute on a laptop CPU.
DEFAULTS = dict(size="tiny", layers=4, heads=4, dims=128, context=64, steps=200, batch_size=8, lr=1e-3,
                warmup=20, cosine=True, eval_interval=20, seed=123)
MAX_PARAMS = 130_000_000  # up to GPT-2 small; larger ones do not train on a CPU
STREAM_EVERY_S = 0.3

CORPUS_BUILTIN = "Built-in: Python's own documentation"
CORPUS_VERDICT = "The Verdict (the book's short story; needs network)"
CORPUS_UPLOAD = "Upload a .txt file"
CORPUS_PASTE = "Paste text"
TOK_GPT2 = "GPT-2 BPE (50,257 tokens)"
TOK_BUILTIN = "pydoc-gpt's own BPE (small vocabulary, built-in)"
CUSTOM = "custom"
SIZES = ["tiny", "mini", "gpt2-small", CUSTOM]

# ---------------------------------------------------------------- inputs

def _tokenizer(choice: str):
    if choice == TOK_BUILTIN:
        names = builtin_names()
        if not names:
            raise gr.Error("No built-in model is installed, so its tokenizer is not available: use GPT-2 BPE.")
        return load_model(names[0] if "pydoc-gpt" not in names else "pydoc-gpt").tokenizer
    return gpt2_tokenizer()


def _corpus_text(corpus: str, upload, pasted: str) -> tuple[str, str]:
    if corpus == CORPUS_BUILTIN:
        return corpus_mod.pydoc_corpus(), "python-docs"
    if corpus == CORPUS_VERDICT:
        book = corpus_mod.the_verdict()
        if not book.available:
            raise gr.Error(book.reason + " Choose the built-in corpus instead.")
        return book.text, "the-verdict"
    if corpus == CORPUS_UPLOAD:
        return check_text(read_text_upload(upload), "uploaded file", max_chars=MAX_UPLOAD_BYTES), "upload"
    return check_text(pasted, "pasted text", max_chars=MAX_TEXT_CHARS), "pasted"


@lru_cache(maxsize=4)
def _encoded(text: str, tokenizer_name: str, tokenizer) -> tuple[list[int], list[int], str, str]:
    train_text, val_text = corpus_mod.train_val_split(text, 0.9)
    return tokenizer.encode(train_text), tokenizer.encode(val_text), train_text, val_text


def _model_config(size, layers, heads, dims, context, vocab_size) -> GPTConfig:
    if size == CUSTOM:
        layers = check_int(layers, "Layers", 1, 24)
        heads = check_int(heads, "Heads", 1, 32)
        dims = check_int(dims, "Embedding dims", 8, 1024)
        context = check_int(context, "Context length", 4, 1024)
        if dims % heads:
            raise gr.Error(f"Embedding dims ({dims}) must be divisible by heads ({heads}): "
                           f"each head gets dims/heads dimensions.")
        cfg = GPTConfig(vocab_size=vocab_size, context_length=context, emb_dim=dims, n_heads=heads,
                        n_layers=layers, drop_rate=0.0)
    elif size in PRESETS:
        cfg = PRESETS[size].with_(vocab_size=vocab_size, drop_rate=0.0)
        if size.startswith("gpt2"):
            cfg = cfg.with_(context_length=256)  # the book's pre-training context
    else:
        raise gr.Error(f"Unknown model size {size!r}.")
    return cfg


def _prepare(corpus, upload, pasted, tok_choice, size, layers, heads, dims, context, batch_size, device="cpu"):
    tokenizer = _tokenizer(tok_choice)
    text, corpus_name = _corpus_text(corpus, upload, pasted)
    cfg = _model_config(size, layers, heads, dims, context, tokenizer.n_vocab)
    n_params = config_parameter_breakdown(cfg).total
    if n_params > MAX_PARAMS:
        raise gr.Error(f"That model has {n_params / 1e6:.0f}M parameters; this server trains at most "
                       f"{MAX_PARAMS / 1e6:.0f}M. Choose a smaller size.")
    batch_size = check_int(batch_size, "Batch size", 1, 64)
    train_ids, val_ids, train_text, val_text = _encoded(text, tokenizer.name, tokenizer)
    need = batch_size * cfg.context_length + 1
    if len(train_ids) < need:
        raise gr.Error(f"The training part of the text has {len(train_ids):,} tokens, but one batch needs "
                       f"batch size × context + 1 = {need:,}. Use more text, a shorter context or a smaller batch.")
    train_loader = create_dataloader_v1(train_text, batch_size=batch_size, max_length=cfg.context_length,
                                        stride=cfg.context_length, shuffle=True, drop_last=True,
                                        token_ids=train_ids, seed=123, pin_memory=pin_host_memory(device))
    val_loader = create_dataloader_v1(val_text, batch_size=batch_size, max_length=cfg.context_length,
                                      stride=cfg.context_length, shuffle=False, drop_last=False,
                                      token_ids=val_ids, pin_memory=pin_host_memory(device))
    if len(val_loader) == 0:
        gr.Warning("The validation part (last 10 %) is shorter than one window: training without validation loss.")
        val_loader = None
    return tokenizer, cfg, train_loader, val_loader, corpus_name, len(train_ids), len(val_ids)


# ---------------------------------------------------------------- figures

def loss_figure(runs: list[dict], x_axis: str = "tokens seen", log_scale: bool = False,
                smoothing: float = 0.6) -> go.Figure:
    if not runs:
        return note_figure("Press Start training: the training and validation loss appear here.")
    fig = go.Figure()
    key = "tokens" if x_axis == "tokens seen" else "steps"
    for i, run in enumerate(runs):
        color = RUN_COLORS[i % len(RUN_COLORS)]
        label = run["label"]
        if run["batch_loss"]:
            x, y = downsample(run["batch_" + key], ema(run["batch_loss"], smoothing))
            fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name=f"{label}: batch loss (smoothed)",
                                     line=dict(color=color, width=1), opacity=0.35))
        if run["eval_train"]:
            x, y = downsample(run["eval_" + key], run["eval_train"])
            fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=f"{label}: train",
                                     line=dict(color=color, width=2)))
        if run["eval_val"]:
            x, y = downsample(run["eval_" + key], run["eval_val"])
            fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=f"{label}: validation",
                                     line=dict(color=color, width=2, dash="dash")))
    fig.update_layout(height=420, margin=dict(l=50, r=20, t=40, b=40), legend=dict(orientation="h", y=-0.2),
                      title="Cross-entropy loss (nats per token)", xaxis_title=x_axis, yaxis_title="loss")
    if log_scale:
        fig.update_yaxes(type="log")
    return fig


def _new_run(label: str) -> dict:
    return {"label": label, "batch_steps": [], "batch_tokens": [], "batch_loss": [],
            "eval_steps": [], "eval_tokens": [], "eval_train": [], "eval_val": []}


def _status(ev, n_params: int, cfg: GPTConfig) -> str:
    def fmt_s(s):
        return "-" if s is None or not math.isfinite(s) else f"{int(s) // 60}:{int(s) % 60:02d}"
    val = "-" if ev.val_loss is None else f"{ev.val_loss:.3f}"
    last_train = "-" if ev.train_loss is None else f"{ev.train_loss:.3f}"
    ppl = "-" if ev.perplexity is None else f"{ev.perplexity:,.1f}"
    lines = [
        f"**{ev.status}** · step {ev.step:,} / {ev.total_steps:,} · epoch {ev.epoch} · "
        f"{ev.tokens_seen:,} tokens seen",
        f"train loss {last_train} · validation loss {val} · perplexity {ppl} · "
        f"ln(vocab) = {math.log(cfg.vocab_size):.2f} (a uniform guess)",
        f"{ev.tokens_per_s:,.0f} tokens/s · elapsed {fmt_s(ev.elapsed_s)} · ETA {fmt_s(ev.eta_s)} · "
        f"lr {ev.lr:.2e} · {n_params / 1e6:.2f}M parameters",
    ]
    if ev.reason:
        lines.append(md_text(ev.reason))
    return "\n\n".join(lines)


# ---------------------------------------------------------------- handlers

def _build(cfg: GPTConfig, seed: int, training: bool):
    """A fresh GPT-2-initialised model, if it fits the server's memory beside every model held
    (training adds gradients and AdamW's two moments: four times the weights)."""
    try:
        with budget.reserve(cfg, what="This model", factor=4 if training else 1):
            return gpt2_init_(build_untrained(cfg, seed=seed), seed=seed)
    except budget.BudgetError as exc:
        raise gr.Error(str(exc)) from None


@friendly_errors
def preview_untrained(corpus, upload, pasted, tok_choice, size, layers, heads, dims, context, batch_size,
                      prompt, seed):
    """What the model says and how wrong it is before any training."""
    tokenizer, cfg, train_loader, val_loader, *_ = _prepare(corpus, upload, pasted, tok_choice, size,
                                                            layers, heads, dims, context, batch_size)
    seed = check_int(seed, "Seed", 0, 2**31 - 1)
    model = _build(cfg, seed, training=False)
    with torch.inference_mode():
        loss = calc_loss_loader(val_loader or train_loader, model, "cpu", num_batches=3)
        ids = tokenizer.encode(prompt or "Every effort moves you") or [tokenizer.eot_id]
        out = generate(model, torch.tensor([ids[-cfg.context_length:]]), max_new_tokens=16,
                       context_size=cfg.context_length)
    text = tokenizer.decode(out[0].tolist())
    return (f"**Untrained model** ({model.num_parameters() / 1e6:.2f}M parameters): initial loss "
            f"**{loss:.3f}** vs ln(vocab) = ln({cfg.vocab_size:,}) = **{math.log(cfg.vocab_size):.3f}**; "
            f"perplexity {perplexity(loss):,.0f} — about as unsure as picking uniformly from the vocabulary.\n\n"
            f"Greedy continuation: {md_code(text)}")


def train_config(steps: int, lr: float, warmup: int, cosine: bool, eval_interval: int, seed: int,
                 prompt: str, sample_temperature: float = 0.0) -> TrainConfig:
    """The run the tab starts (validated numbers in): AdamW, the live sample at each evaluation."""
    return TrainConfig(max_steps=steps, lr=lr, weight_decay=0.1, warmup_steps=warmup, cosine_decay=bool(cosine),
                       min_lr=lr / 10, eval_interval=eval_interval, eval_batches=5, max_seconds=MAX_SECONDS,
                       sample_prompt=(prompt or "Every effort moves you")[:200], sample_tokens=SAMPLE_TOKENS,
                       sample_temperature=sample_temperature, seed=seed)


@friendly_errors
def pretrain(corpus, upload, pasted, tok_choice, size, layers, heads, dims, context, steps, batch_size, lr,
             warmup, cosine, eval_interval, seed, prompt, x_axis, log_scale, smoothing, runs,
             sample_temperature=None, request: gr.Request = None):
    """Stream a training run: (figure, status, samples, runs)."""
    steps = check_int(steps, "Steps", 1, MAX_STEPS)
    lr = check_float(lr, "Learning rate", 0.0, 1.0, lo_open=True)
    warmup = check_int(warmup, "Warm-up steps", 0, MAX_STEPS)
    eval_interval = check_int(eval_interval, "Evaluate every", 1, MAX_STEPS)
    seed = check_int(seed, "Seed", 0, 2**31 - 1)
    smoothing = check_float(smoothing, "Smoothing", 0.0, 0.99)
    sample_temperature = check_float(SAMPLE_TEMPERATURE if sample_temperature is None else sample_temperature,
                                     "Sample temperature", 0.0, MAX_SAMPLE_TEMPERATURE)
    device = pick_device()  # a CUDA GPU when there is one (bf16 autocast where supported), else the CPU
    tokenizer, cfg, train_loader, val_loader, corpus_name, n_train, n_val = _prepare(
        corpus, upload, pasted, tok_choice, size, layers, heads, dims, context, batch_size, device)
    model = _build(cfg, seed, training=True)
    session = session_key(request)
    stop_flag = begin_training(session, "pretrain")
    runs = list(runs or [])[-5:]  # earlier runs stay on the chart for comparison
    run = _new_run(f"run {len(runs) + 1}: {size}, lr {lr:g}")
    runs.append(run)
    n_params = model.num_parameters()
    tcfg = train_config(steps, lr, warmup, cosine, eval_interval, seed, prompt, sample_temperature)
    samples: list[str] = []
    last = None
    header = (f"Corpus {corpus_name}: {n_train:,} training and {n_val:,} validation tokens "
              f"({tokenizer.name} tokenizer).")
    try:
        last_yield = 0.0
        for ev in train_model(model, train_loader, val_loader, tcfg, tokenizer=tokenizer, device=device,
                              stop=stop_flag):
            last = ev
            if ev.batch_loss is not None and ev.step > 0:
                run["batch_steps"].append(ev.step)
                run["batch_tokens"].append(ev.tokens_seen)
                run["batch_loss"].append(ev.batch_loss)
            if ev.is_eval:
                run["eval_steps"].append(ev.step)
                run["eval_tokens"].append(ev.tokens_seen)
                run["eval_train"].append(ev.train_loss)
                if ev.val_loss is not None:
                    run["eval_val"].append(ev.val_loss)
                if ev.sample is not None:
                    samples.append(f"[step {ev.step}] {ev.sample}")
            now = time.perf_counter()
            if ev.is_eval or ev.done or now - last_yield >= STREAM_EVERY_S:
                last_yield = now
                yield (loss_figure(runs, x_axis, log_scale, smoothing), header + "\n\n" + _status(ev, n_params, cfg),
                       "\n".join(reversed(samples[-30:])), runs)
    finally:
        try:
            if last is not None and last.step > 0:
                # Kept on the CPU: saving, scoring and previews run there (GPU memory is freed).
                SESSIONS.set_trained(session, {"model": model.to("cpu").eval(), "tokenizer": tokenizer,
                                    "meta": {"corpus": corpus_name, "steps": last.step, "tokens_seen": last.tokens_seen,
                                             "train_loss": last.train_loss, "val_loss": last.val_loss,
                                             "perplexity": last.perplexity, "config": cfg.to_dict(),
                                             "lr": lr, "batch_size": int(batch_size), "seed": seed}})
        finally:
            end_training(session)


def stop_training(request: gr.Request = None) -> None:
    """Ask this session's run to stop after its current step (it keeps the partial model)."""
    flag = SESSIONS.stop_request(session_key(request), "pretrain")
    if flag is None:
        gr.Info("No training run of yours is in progress.")
    else:
        flag.set()


@friendly_errors
def save_trained(name, overwrite, request: gr.Request = None):
    """Save this session's last trained model as a checkpoint that appears in the model picker."""
    try:
        name = saved_runs.check_run_name(name)
    except saved_runs.RunError as exc:
        raise gr.Error(str(exc)) from None
    entry = SESSIONS.trained(session_key(request))
    if entry is None:
        raise gr.Error("There is no trained model in this session yet (or it expired after an hour): train one first.")
    owner = owner_of(request)
    try:
        model_name = saved_runs.save_run(owner, name, entry["model"], entry["tokenizer"], entry["meta"], bool(overwrite))
    except saved_runs.RunError as exc:
        raise gr.Error(str(exc)) from None
    forget(model_name)
    run = model_name.rsplit("/", 1)[-1]
    gr.Info(f"Saved as {run}. Pick it in 'Active model' at the top to use it in every tab.")
    return (f"Saved **{md_text(run)}** ({entry['meta']['steps']} steps, validation loss "
            f"{entry['meta']['val_loss'] if entry['meta']['val_loss'] is not None else '-'}). "
            "Only this browser session can load it.")


def picker_choices(request: gr.Request = None):
    """The header picker's list after a save: this session's runs included."""
    return gr.update(choices=model_choices(owner_of(request)))


def _export_source(request: gr.Request | None):
    """This session's last trained model, for the Export / Push controls."""
    entry = SESSIONS.trained(session_key(request))
    if entry is None:
        raise gr.Error("There is no trained model in this session yet (or it expired after an hour): train one first.")
    name = f"my-gpt-{entry['meta']['steps']}-steps"
    bundle = ModelBundle(name, entry["model"], entry["tokenizer"], entry["model"].cfg, "trained",
                         {"name": name, **entry["meta"]})
    return name, lambda out: export_hf(bundle, out)


def _loss_on(bundle_model, tokenizer, text: str, context: int, max_batches: int = 8) -> tuple[float, int, int]:
    """Mean loss over the first windows of ``text``, the tokens scored and the characters they cover."""
    ids = tokenizer.encode(text)
    context = min(context, bundle_model.cfg.context_length)
    loader = create_dataloader_v1(text, batch_size=1, max_length=context, stride=context, shuffle=False,
                                  drop_last=False, token_ids=ids)
    if len(loader) == 0:
        raise gr.Error(f"The validation text is shorter than one window of {context} tokens.")
    with torch.inference_mode():
        loss = calc_loss_loader(loader, bundle_model, "cpu", num_batches=max_batches)
    n_tokens = min(len(loader), max_batches) * context
    return loss, n_tokens, len(tokenizer.decode(ids[1:n_tokens + 1]))


@friendly_errors
def compare_with_gpt2(gpt2_size, corpus, upload, pasted, active_name, request: gr.Request = None,
                      progress=gr.Progress()):
    """Validation loss of GPT-2 and of the small models, on the same characters."""
    text, corpus_name = _corpus_text(corpus, upload, pasted)
    _, val_text = corpus_mod.train_val_split(text, 0.9)
    val_text = val_text[:20_000]  # the same characters for every model
    rows = []
    candidates = [(f"{gpt2_size} (downloaded)", gpt2_size)]
    entry = SESSIONS.trained(session_key(request))
    if active_name:
        candidates.append((f"{active_name} (active model)", active_name))
    for label, name in candidates:
        try:
            bundle = load_model(name, progress=lambda f, msg: progress(f, desc=msg))
        except ModelLoadError as exc:
            gr.Warning(str(exc))
            rows.append(f"| {md_text(label)} | unavailable: {md_text(str(exc))} | | | |")
            continue
        rows.append(_row(label, *_loss_on(bundle.model, bundle.tokenizer, val_text, 256)))
    if entry is not None:
        rows.append(_row("your last trained model", *_loss_on(entry["model"], entry["tokenizer"], val_text, 256)))
    head = ("| model | loss per token | perplexity | tokens scored | nats per character |\n"
            "|---|---|---|---|---|\n")
    note = (f"\n\nValidation text: the last 10 % of **{corpus_name}** (first 20,000 characters). "
            "Models with different tokenizers cut the text into different numbers of tokens, so "
            "compare *nats per character* (loss × tokens / characters) across tokenizers. "
            "The book reports GPT-2 124M at 3.56 validation loss on The Verdict.")
    return head + "\n".join(rows) + note


def _row(label, loss, n_tok, n_chars) -> str:
    per_char = loss * n_tok / max(n_chars, 1)
    return f"| {md_text(label)} | {loss:.3f} | {perplexity(loss):,.1f} | {n_tok:,} | {per_char:.3f} |"


# ---------------------------------------------------------------- the tab

def build(ctx) -> None:
    with gr.Tab("6 · Pretrain", id="pretrain", elem_id="tab-pretrain"):
        gr.Markdown(
            "### Pre-training from scratch\nNext-token prediction on sliding windows: cross-entropy loss, "
            "AdamW, evaluation on held-out text every few steps (the book's chapter 5). The loss starts "
            "near ln(vocabulary size) — a uniform guess — and falls as the model learns.")
        with gr.Row():
            with gr.Column(scale=1):
                corpus = gr.Radio([CORPUS_BUILTIN, CORPUS_VERDICT, CORPUS_UPLOAD, CORPUS_PASTE], value=CORPUS_BUILTIN,
                                  label="Corpus", elem_id="pt-corpus",
                                  info="Split 90 % train / 10 % validation by characters, as the book does.")
                upload = gr.File(label="Your .txt file (UTF-8, ≤ 2 MB)", file_types=[".txt"], type="filepath",
                                 elem_id="pt-upload")
                pasted = gr.Textbox(label="Pasted text", lines=4, max_length=MAX_TEXT_CHARS, elem_id="pt-pasted",
                                    info="Used when the corpus is 'Paste text'.")
                tok = gr.Radio([TOK_BUILTIN, TOK_GPT2], value=TOK_BUILTIN if builtin_names() else TOK_GPT2,
                               label="Tokenizer", elem_id="pt-tokenizer",
                               info="A small vocabulary trains much faster on a CPU: GPT-2's 50,257-row "
                                    "embedding and output head dominate a tiny model.")
                size = gr.Dropdown(SIZES, value=DEFAULTS["size"], label="Model size", elem_id="pt-size",
                                   info="; ".join(PRESET_LABELS[s] for s in SIZES if s in PRESET_LABELS)
                                        + " (context 256 for GPT-2 small). 'custom' uses the four fields below.")
                with gr.Row():
                    layers = gr.Number(DEFAULTS["layers"], label="Layers", precision=0, info="Transformer blocks", minimum=1)
                    heads = gr.Number(DEFAULTS["heads"], label="Heads", precision=0, info="Must divide dims", minimum=1)
                    dims = gr.Number(DEFAULTS["dims"], label="Embedding dims", precision=0, info="Width of the residual stream")
                    context = gr.Number(DEFAULTS["context"], label="Context", precision=0, info="Tokens per window (≤ 1024)")
            with gr.Column(scale=1):
                with gr.Row():
                    steps = gr.Number(DEFAULTS["steps"], label="Steps", precision=0, elem_id="pt-steps",
                                      info=f"Optimizer steps (this server caps at {MAX_STEPS:,} and "
                                           f"{MAX_SECONDS // 60} minutes).")
                    batch = gr.Number(DEFAULTS["batch_size"], label="Batch size", precision=0, elem_id="pt-batch",
                                      info="Windows per step (the book uses 2).")
                with gr.Row():
                    lr = gr.Number(DEFAULTS["lr"], label="Learning rate", elem_id="pt-lr",
                                   info="AdamW step size; the book uses 4e-4 (weight decay 0.1).")
                    warmup = gr.Number(DEFAULTS["warmup"], label="Warm-up steps", precision=0,
                                       info="Linear ramp from lr/warm-up to lr: avoids early blow-ups.")
                with gr.Row():
                    cosine = gr.Checkbox(DEFAULTS["cosine"], label="Cosine decay", info="Lower the lr to lr/10 by the last step.")
                    eval_interval = gr.Number(DEFAULTS["eval_interval"], label="Evaluate every", precision=0, elem_id="pt-eval",
                                              info="Steps between train/validation evaluations (5 batches each).")
                    seed = gr.Number(DEFAULTS["seed"], label="Seed", precision=0, info="Initial weights and sampling.")
                with gr.Row():
                    prompt = gr.Textbox(DEFAULT_SAMPLE_PROMPT, label="Sample prompt", max_length=200,
                                        info="Continued at each evaluation: watch it learn.")
                    sample_temp = gr.Number(SAMPLE_TEMPERATURE, label="Sample temperature", elem_id="pt-sample-temp",
                                            minimum=0, maximum=MAX_SAMPLE_TEMPERATURE,
                                            info="0 = greedy, as the book's printout (a young model repeats its "
                                                 "commonest token, often a line break); 1 = its own probabilities, "
                                                 "seeded.")
                with gr.Row():
                    preview_btn = gr.Button("Before training: what does it say?", elem_id="pt-preview")
                    start = gr.Button("Start training", variant="primary", elem_id="pt-start")
                    stop = gr.Button("Stop", variant="stop", elem_id="pt-stop")
        preview = gr.Markdown(elem_id="pt-preview-out")
        status = gr.Markdown("Press **Start training**.", elem_id="pt-status")
        with gr.Row():
            with gr.Column(scale=3):
                plot = gr.Plot(loss_figure([]), label="Loss", elem_id="pt-plot")
                with gr.Row():
                    x_axis = gr.Radio(["tokens seen", "steps"], value="tokens seen", label="x axis")
                    log_scale = gr.Checkbox(False, label="Log-scale y")
                    smoothing = gr.Slider(0, 0.95, value=0.6, step=0.05, label="Smoothing (batch loss EMA)")
            samples = gr.Textbox(label="Samples as it learns (newest first)", lines=16, elem_id="pt-samples",
                                 scale=2)
        runs = gr.State([])
        with gr.Accordion("Save the trained model", open=False):
            with gr.Row():
                save_name = gr.Textbox(label="Checkpoint name", placeholder="my-first-gpt", max_length=40,
                                       elem_id="pt-save-name")
                overwrite = gr.Checkbox(False, label="Overwrite an existing checkpoint of that name")
                save_btn = gr.Button("Save", elem_id="pt-save")
            save_out = gr.Markdown(elem_id="pt-save-out")
        hub_export.build(_export_source, "pretrain", "pt",
                         "Your last trained model as a GPT-2 checkpoint: config.json, model.safetensors, "
                         "tokenizer files and a model card with how it was trained.")
        with gr.Accordion("Load GPT-2's weights and compare", open=False):
            gr.Markdown("OpenAI's GPT-2 from the Hugging Face Hub (downloaded once, then cached). The table "
                        "scores GPT-2, the active model and your last trained model on the same validation text.")
            with gr.Row():
                gpt2_size = gr.Dropdown(["gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"], value="gpt2",
                                        label="GPT-2 size", info="124M, 355M, 774M, 1558M parameters")
                compare_btn = gr.Button("Load and compare", elem_id="pt-compare")
            compare_out = gr.Markdown(elem_id="pt-compare-out")

        inputs = [corpus, upload, pasted, tok, size, layers, heads, dims, context]
        preview_btn.click(preview_untrained, inputs + [batch, prompt, seed], preview, concurrency_id=CPU_HEAVY,
                          api_name="pretrain_preview")
        start.click(pretrain, inputs + [steps, batch, lr, warmup, cosine, eval_interval, seed, prompt,
                                                x_axis, log_scale, smoothing, runs, sample_temp],
                            [plot, status, samples, runs], concurrency_id="training", concurrency_limit=2,
                            show_progress_on=[status], api_name="pretrain")
        stop.click(stop_training, None, None, queue=False, api_name="pretrain_stop")
        for ctrl in (x_axis, log_scale, smoothing):
            ctrl.change(loss_figure, [runs, x_axis, log_scale, smoothing], plot, queue=False, api_visibility="private")
        # The header's picker is updated only after a save succeeded: an error raised by a handler
        # marks every output it lists, and a failed save must not mark the header.
        save_btn.click(save_trained, [save_name, overwrite], save_out, api_name="pretrain_save").success(
            picker_choices, None, ctx.model_picker, api_visibility="private")
        compare_btn.click(compare_with_gpt2, [gpt2_size, corpus, upload, pasted, ctx.model_name], compare_out,
                          concurrency_id=CPU_HEAVY, api_name="pretrain_compare_gpt2")
