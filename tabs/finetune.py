"""Stage 7: fine-tune the active model — LoRA, the book's last-block recipe, or every weight —
for classification (7.1) or for following instructions (7.2), with live curves."""
from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import gradio as gr
import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from llm_core import budget
from llm_core import instruct_data as idata
from llm_core.finetune import (
    MAX_BATCH, FinetuneError, FinetuneSettings, book_lora_counts, finetune, planned_counts, respond,
)
from llm_core.export import zip_folder
from llm_core.lora import ALL_TARGETS, TARGET_LABELS, LoRAError, load_adapter
from llm_core.peft_format import is_peft_upload, load_peft_adapter
from tabs import hub_export
from tabs.common import (begin_training, check_float, check_int, check_text, end_training, friendly_errors,
                         get_bundle)
from tabs.figures import RUN_COLORS, downsample, ema, note_figure
from tabs.guard import discard
from tabs.session_store import SESSIONS, session_key
from tabs.markup import html_text, md_text

# Server-side caps (2 vCPUs shared by every visitor).
MAX_STEPS = 2000
MAX_SECONDS = float(os.environ.get("LLM_EXPLORER_FT_MAX_SECONDS", 10 * 60))
MAX_PARAMS_FULL = 130_000_000   # full / last-block fine-tuning: up to GPT-2 small
MAX_PARAMS_LORA = 400_000_000   # LoRA keeps the optimizer state small: up to GPT-2 medium
STREAM_EVERY_S = 0.3
MAX_PROMPT_CHARS = 2000
ADAPTER_DIR = Path(tempfile.gettempdir()) / "llm-explorer-adapters"

TASK_CLS = "Classification (7.1)"
TASK_INS = "Instruction following (7.2)"
DS_CLS_BUILTIN = "Built-in: Python docstrings — function or class?"
DS_CLS_BOOK = "SMS Spam Collection (the book's; needs network)"
DS_CLS_UPLOAD = "Upload a CSV (text,label)"
DS_INS_BUILTIN = "Built-in: Python docs questions + computed tasks"
DS_INS_BOOK = "instruction-data.json (the book's; needs network)"
DS_INS_UPLOAD = "Upload a JSON (instruction, input, output)"
DATASETS = {TASK_CLS: [DS_CLS_BUILTIN, DS_CLS_BOOK, DS_CLS_UPLOAD], TASK_INS: [DS_INS_BUILTIN, DS_INS_BOOK, DS_INS_UPLOAD]}
# One list for both tasks: the server checks a value against the component's choices, and the
# task's own three come first after a switch.
ALL_DATASETS = DATASETS[TASK_CLS] + DATASETS[TASK_INS]
M_LORA = "LoRA"
M_LAST = "Last block + head (book 7.1)"
M_FULL = "Full fine-tune"
METHODS = {M_LORA: "lora", M_LAST: "last-block", M_FULL: "full"}
TARGET_CHOICES = [(TARGET_LABELS[t], t) for t in ALL_TARGETS]
DEFAULT_TARGETS = ["q", "k", "v", "out", "ff_in", "ff_out"]
TABLE_OPEN = "<table class='ft-table'>"

# ---------------------------------------------------------------- inputs

def _task(task: str) -> str:
    if task not in DATASETS:
        raise gr.Error(f"Choose a task: {TASK_CLS} or {TASK_INS}.")
    return "classification" if task == TASK_CLS else "instruction"


def _load_data(task: str, dataset: str, upload):
    """The chosen data set, or a clear error."""
    if task not in DATASETS:
        raise gr.Error(f"Choose the task: {' or '.join(DATASETS)}.")
    if dataset not in DATASETS[task]:
        raise gr.Error(f"{str(dataset)[:80]!r} is not a data set for {task}; choose one of: "
                       f"{', '.join(DATASETS[task])}.")
    try:
        if dataset == DS_CLS_BUILTIN:
            return idata.builtin_classification()
        if dataset == DS_INS_BUILTIN:
            return idata.builtin_instructions()
        if dataset in (DS_CLS_BOOK, DS_INS_BOOK):
            got = idata.sms_spam() if dataset == DS_CLS_BOOK else idata.book_instruction_data()
            if isinstance(got, idata.Unavailable):
                raise gr.Error(got.reason, title="Data set unavailable")
            return got
        if not upload:
            raise gr.Error("Choose a file to upload first (CSV with text,label columns, or JSON with "
                           "instruction/input/output).")
        name = Path(str(upload)).name
        if dataset == DS_CLS_UPLOAD:
            return idata.parse_classification_csv(upload, name=name)
        return idata.load_instruction_upload(upload, name=name)
    except idata.DatasetError as exc:
        if dataset in (DS_CLS_UPLOAD, DS_INS_UPLOAD):
            discard(upload)
        raise gr.Error(f"The data set cannot be used: {exc}", title="Bad data set") from None


SC_PEFT, SC_BOOK = "alpha/rank", "book (alpha)"
SCALINGS = {SC_PEFT: "alpha/rank", SC_BOOK: "alpha"}  # label → FinetuneSettings.lora_scaling


def _targets(targets) -> tuple[str, ...]:
    targets = tuple(t for t in (targets or []) if t in ALL_TARGETS)
    if not targets:
        raise gr.Error("Tick at least one layer type for LoRA (e.g. the attention projections).")
    return targets


def _settings(task, method, rank, alpha, targets, epochs, steps, batch, lr, eval_interval, seed, max_length,
              mask, scaling=None) -> FinetuneSettings:
    if method not in METHODS:
        raise gr.Error(f"Choose a method: {', '.join(METHODS)}.")
    scaling = scaling or SC_PEFT
    if scaling not in SCALINGS:
        raise gr.Error(f"Choose a LoRA scaling: {' or '.join(SCALINGS)}.")
    m = METHODS[method]
    return FinetuneSettings(
        task=_task(task), method=m,
        rank=check_int(rank, "LoRA rank", 1, 256) if m == "lora" else 8,
        alpha=check_float(alpha, "LoRA alpha", 0.0, 1024.0, lo_open=True) if m == "lora" else 16.0,
        lora_scaling=SCALINGS[scaling],
        targets=_targets(targets) if m == "lora" else ("all",),
        epochs=check_int(epochs, "Epochs", 1, 100), max_steps=check_int(steps, "Max steps", 1, MAX_STEPS),
        batch_size=check_int(batch, "Batch size", 1, MAX_BATCH), lr=check_float(lr, "Learning rate", 0.0, 1.0, lo_open=True),
        eval_interval=check_int(eval_interval, "Evaluate every", 1, MAX_STEPS), eval_batches=4,
        seed=check_int(seed, "Seed", 0, 2**31 - 1), max_seconds=MAX_SECONDS,
        max_length=check_int(max_length, "Max tokens per example", 8, 4096), mask_instruction=bool(mask),
        n_samples=3, n_score=20, sample_tokens=32)


def _check_size(bundle, settings: FinetuneSettings) -> None:
    n = bundle.num_parameters
    cap = MAX_PARAMS_LORA if settings.method == "lora" else MAX_PARAMS_FULL
    if n > cap and not torch.cuda.is_available():
        raise gr.Error(f"{bundle.name} has {n / 1e6:.0f}M parameters; on this CPU server "
                       f"{'LoRA' if settings.method == 'lora' else 'this method'} trains models up to "
                       f"{cap / 1e6:.0f}M. Pick a smaller model at the top (or LoRA).")
    _check_memory(bundle, "A trainable copy of " + bundle.name,
                  4 if settings.method == "full" else 1.5)  # full: + gradients and AdamW's two moments


def _check_memory(bundle, what: str, factor: float = 1.0) -> None:
    """The copy this tab makes of the shared model counts against the server's memory budget."""
    try:
        with budget.reserve(bundle.config, what=what, factor=factor):
            pass
    except budget.BudgetError as exc:
        raise gr.Error(str(exc), title="Not enough memory") from None


# ---------------------------------------------------------------- figures

FT_PLOT_NOTE = "Press Start fine-tuning: the loss and accuracy curves appear here."


def curves_figure(runs: list[dict], log_scale: bool = False, smoothing: float = 0.6) -> go.Figure:
    """Train/validation loss of this session's runs of the newest run's task (newest bold), plus
    accuracy for classification (losses of different tasks are not comparable)."""
    if not runs:
        return note_figure(FT_PLOT_NOTE)
    runs = [r for r in runs if r.get("task") == runs[-1].get("task")]
    with_acc = any(r.get("val_acc") for r in runs)
    fig = make_subplots(rows=1, cols=2 if with_acc else 1, subplot_titles=(
        ("Loss (cross-entropy)", "Accuracy") if with_acc else ("Loss (cross-entropy)",)))
    for i, run in enumerate(runs):
        color = RUN_COLORS[i % len(RUN_COLORS)]
        newest = i == len(runs) - 1
        opacity = 1.0 if newest else 0.45
        label = run["label"]
        if newest and run["batch_loss"]:
            x, y = downsample(run["batch_steps"], ema(run["batch_loss"], smoothing))
            fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name=f"{label}: batch loss (smoothed)",
                                     line=dict(color=color, width=1), opacity=0.3), row=1, col=1)
        for key, dash, what in (("train_loss", None, "train"), ("val_loss", "dash", "validation")):
            if run[key]:
                x, y = downsample(run["eval_steps"], run[key])
                fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=f"{label}: {what}",
                                         line=dict(color=color, width=2.5 if newest else 1.5, dash=dash),
                                         opacity=opacity), row=1, col=1)
        if with_acc:
            for key, dash, what in (("train_acc", None, "train acc"), ("val_acc", "dash", "val acc")):
                if run.get(key):
                    x, y = downsample(run["eval_steps"], run[key])
                    fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=f"{label}: {what}",
                                             line=dict(color=color, width=2.5 if newest else 1.5, dash=dash),
                                             opacity=opacity, showlegend=newest), row=1, col=2)
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(type="log" if log_scale else "linear", row=1, col=1)
    if with_acc:
        fig.update_yaxes(range=[0, 1.02], row=1, col=2)
    fig.update_layout(height=400, margin=dict(l=50, r=20, t=40, b=40), legend=dict(orientation="h", y=-0.25))
    return fig


def norms_figure(norms: dict, n_layers: int) -> go.Figure | None:
    """Heatmap of the weight update's Frobenius norm per layer (rows) and target (columns)."""
    if not norms:
        return None
    cols = [t for t in ALL_TARGETS if any(k[0] == t for k in norms)]
    rows = [f"layer {i}" for i in range(n_layers)] + (["output head"] if any(k[1] is None for k in norms) else [])
    z = np.full((len(rows), len(cols)), np.nan, dtype=np.float32)
    for (t, i), v in norms.items():
        z[n_layers if i is None else i, cols.index(t)] = v
    fig = go.Figure(go.Heatmap(z=z, x=[TARGET_LABELS[c] for c in cols], y=rows, colorscale="Viridis",
                               colorbar=dict(title="‖ΔW‖"), hovertemplate="%{y} · %{x}: %{z:.4f}<extra></extra>"))
    fig.update_layout(height=max(260, 28 * len(rows) + 120), title="Which weights changed: ‖ΔW‖ (Frobenius norm)",
                      margin=dict(l=90, r=20, t=50, b=80), yaxis=dict(autorange="reversed"))
    return fig


def confusion_figure(conf: list[list[int]], labels: list[str], split: str) -> go.Figure:
    z = np.asarray(conf, dtype=np.float32)
    fig = go.Figure(go.Heatmap(z=z, x=[f"predicted {l}" for l in labels], y=[f"true {l}" for l in labels],
                               colorscale="Blues", text=z.astype(int), texttemplate="%{text}",
                               hovertemplate="%{y}, %{x}: %{z:.0f}<extra></extra>"))
    fig.update_layout(height=320, title=f"Confusion matrix ({split})", margin=dict(l=110, r=20, t=50, b=60),
                      yaxis=dict(autorange="reversed"))
    return fig


# ---------------------------------------------------------------- text blocks

def _fmt_s(s) -> str:
    return "-" if s is None or not math.isfinite(s) else f"{int(s) // 60}:{int(s) % 60:02d}"


def _fmt(v, pct=False) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{100 * v:.1f} %" if pct else f"{v:.3f}"


def _status(ev, header: str) -> str:
    acc = ""
    if ev.val_acc is not None:
        acc = f" · accuracy train {_fmt(ev.train_acc, True)} / validation {_fmt(ev.val_acc, True)}"
    lines = [header,
             f"**{ev.status}** · step {ev.step:,} / {ev.total_steps:,} · epoch {ev.epoch} · {ev.tokens_seen:,} tokens",
             f"loss: last batch {_fmt(ev.batch_loss)} · train {_fmt(ev.train_loss)} · validation {_fmt(ev.val_loss)}{acc}",
             f"{ev.tokens_per_s:,.0f} tokens/s · elapsed {_fmt_s(ev.elapsed_s)} · ETA {_fmt_s(ev.eta_s)}"]
    if ev.reason:
        lines.append(md_text(ev.reason))
    return "\n\n".join(lines)


def _samples_md(history: list[dict]) -> str:
    out = []
    for h in reversed(history[-3:]):
        if not h.get("samples"):
            continue
        rows = "".join(f"<tr><td>{html_text(s['instruction'])}{'<br><i>' + html_text(s['input']) + '</i>' if s['input'] else ''}"
                       f"</td><td>{html_text(s['expected'])}</td><td>{html_text(s['response']) or '<i>(nothing)</i>'}</td></tr>"
                       for s in h["samples"])
        out.append(f"<b>step {h['step']}</b>{TABLE_OPEN}<tr><th>held-out instruction</th>"
                   f"<th>expected</th><th>model's answer</th></tr>{rows}</table>")
    return "".join(out) or "<i>Held-out answers appear here at each evaluation (instruction tuning).</i>"


def _score_line(name: str, s: dict | None) -> str:
    if not s or not s.get("n"):
        return f"| {name} | - | - | - |"
    em = f"{100 * s['exact_match']:.0f} % of {s['n_exact']}" if s["exact_match"] is not None else "-"
    sim = f"{s['similarity']:.2f} over {s['n_similar']}" if s["similarity"] is not None else "-"
    return f"| {name} | {em} | {sim} | {s['score']:.1f} |"


def _result_md(res) -> str:
    c = res.counts
    lines = [f"**Method:** {res.method} · {c.summary()} · adapter for **{html_text(res.info.base_model)}** "
             f"(fingerprint `{res.info.base_fingerprint}`)"]
    if res.task == "classification":
        acc = " · ".join(f"{k} {100 * v:.1f} %" for k, v in res.accuracy.items())
        lines.append(f"**Accuracy** (up to 400 examples per split): {acc} · chance ≈ {100 / len(res.label_names):.0f} %")
    else:
        b, a = res.scores.get("before"), res.scores.get("after")
        lines.append(f"**Final validation loss:** {_fmt(res.val_loss)}\n\n"
                     "| held-out test examples | exact match (computed answers) | word similarity (0-1) | score 0-100 |\n"
                     "|---|---|---|---|\n" + _score_line("before tuning", b) + "\n" + _score_line("after tuning", a))
    return "\n\n".join(lines)


def _comparison_html(res) -> str:
    if res.task == "classification":
        rows = "".join(
            f"<tr><td>{html_text(e['text'][:200])}</td><td>{html_text(e['label'])}</td><td>"
            + ", ".join(f"{html_text(k)} {100 * v:.0f} %" for k, v in e["probs"].items()) + "</td></tr>"
            for e in res.examples)
        return (f"{TABLE_OPEN}<tr><th>validation text</th><th>true label</th><th>tuned model's "
                f"probabilities</th></tr>{rows}</table>")
    rows = "".join(
        f"<tr><td>{html_text(e['instruction'])}{'<br><i>' + html_text(e['input']) + '</i>' if e['input'] else ''}</td>"
        f"<td>{html_text(e['expected'])}</td><td>{html_text(e['before']) or '<i>(nothing)</i>'}</td>"
        f"<td>{html_text(e['after']) or '<i>(nothing)</i>'}</td></tr>" for e in res.comparisons[:12])
    return (f"{TABLE_OPEN}<tr><th>held-out instruction</th><th>expected</th><th>base model</th>"
            f"<th>tuned model</th></tr>{rows}</table>")


def _new_run(label: str, task: str) -> dict:
    return {"label": label, "task": task, "batch_steps": [], "batch_loss": [], "eval_steps": [], "train_loss": [],
            "val_loss": [], "train_acc": [], "val_acc": []}


def _export_name(res) -> str:
    base = re.sub(r"[^A-Za-z0-9_.-]", "-", res.info.base_model)[:40].strip(".-") or "model"
    return f"{base}-{res.task}-{res.method}"


def _adapter_zip(session: str, res, run_no: int) -> Path:
    """The run's result in Hugging Face's formats (peft adapter or whole model), zipped for download."""
    safe = re.sub(r"[^A-Za-z0-9_-]", "", session)[:32] or "api"
    home = ADAPTER_DIR / safe
    if home.is_dir():  # only the newest run's download is kept (a full fine-tune of GPT-2 is ~0.5 GB)
        for old in home.iterdir():
            if old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)
    folder = res.save_hf(home / f"run{run_no}" / f"{_export_name(res)}-run{run_no}")
    archive = zip_folder(folder, folder.parent / f"{folder.name}.zip")
    shutil.rmtree(folder, ignore_errors=True)
    return archive


def _export_source(request: gr.Request | None):
    """This session's fine-tuned result, for the Export / Push controls."""
    res = SESSIONS.result(session_key(request))
    if res is None:
        raise gr.Error("There is no fine-tuned result in this session yet (or it expired): run a fine-tune "
                       "or load an adapter first.")
    return _export_name(res), res.save_hf


# ---------------------------------------------------------------- handlers

@friendly_errors
def parameter_counts(task, method, rank, alpha, targets, model_name, scaling=None):
    """Trainable vs total parameters of the planned run (no weights are built), beside the book's
    appendix E count and this tab's own at the book's settings (both counted from models)."""
    try:
        s = _settings(task, method, rank, alpha, targets, 1, 1, 1, 1e-3, 1, 123, 128, False, scaling)
    except gr.Error as exc:
        return f"*{md_text(str(exc))}*"
    bundle = get_bundle(model_name)
    n_classes = 2 if s.task == "classification" else None
    try:
        counts = planned_counts(bundle.config, s, n_classes)
    except (LoRAError, FinetuneError) as exc:
        return f"*{md_text(str(exc))}*"
    book = book_lora_counts(16)
    head = " (with a 2-class head)" if n_classes else ""
    scale = ""
    if s.method == "lora":
        factor = s.peft_alpha / s.rank
        formula = "α" if s.lora_scaling == "alpha" else "α/r"
        scale = f" LoRA scaling **{scaling or SC_PEFT}**: the update is multiplied by {formula} = {factor:g}."
    return (f"**{bundle.name}**{head}: {counts.summary()}.{scale}\n\n"
            f"The book's appendix E (GPT-2 small, a new 2-class head, rank 16, α 16) freezes the "
            f"{book['before']:,} trainable parameters and puts LoRA on every Linear layer, the new head "
            f"included: **{book['book']:,}** trainable. This tab at the same settings trains the new head in "
            f"full instead: **{book['ours']:,}**. The counts do not depend on the scaling; the book's results "
            f"(≈ 98 % validation accuracy) were trained with its *{SC_BOOK}* scaling (× α = 16), while "
            f"*{SC_PEFT}* (peft's, this tab's default) gives × 1 at α = r.")


@friendly_errors
def preview_data(task, dataset, upload):
    """Size, classes and a few examples of the chosen data set."""
    data = _load_data(task, dataset, upload)
    if isinstance(data, idata.ClassificationData):
        counts = ", ".join(f"{md_text(k)}: {v:,}" for k, v in data.class_counts().items())
        rows = "\n".join(f"| {md_text(t[:160])} | {md_text(data.label_names[y])} |"
                         for t, y in list(zip(data.texts, data.labels))[:6])
        return (f"**{md_text(data.name)}** — {len(data):,} examples ({counts}). {md_text(data.description)}"
                f"\n\n| text | label |\n|---|---|\n{rows}")
    rows = "\n".join(
        f"| {md_text(e['instruction'][:100])} | {md_text(e.get('input', '')[:60])} | {md_text(e['output'][:100])} |"
        .replace("\n", " ") for e in data.entries[:6])
    return (f"**{md_text(data.name)}** — {len(data):,} entries. {md_text(data.description)}\n\n"
            f"| instruction | input | output |\n|---|---|---|\n{rows}")


@friendly_errors
def run_finetune(task, dataset, upload, method, rank, alpha, targets, epochs, steps, batch, lr, eval_interval,
                 seed, max_length, mask, log_scale, smoothing, model_name, scaling=None,
                 request: gr.Request = None):
    """Stream a fine-tuning run: (status, curves, held-out answers, results, confusion, norms, comparison, adapter)."""
    settings = _settings(task, method, rank, alpha, targets, epochs, steps, batch, lr, eval_interval, seed,
                         max_length, mask, scaling)
    smoothing = check_float(smoothing, "Smoothing", 0.0, 0.99)
    bundle = get_bundle(model_name)
    _check_size(bundle, settings)
    data = _load_data(task, dataset, upload)
    session = session_key(request)
    stop_flag = begin_training(session, "finetune")
    run_no = len(SESSIONS.runs(session)) + 1
    run = _new_run(f"run {run_no}: {settings.method}"
                   + (f" r{settings.rank}" if settings.method == "lora" else "") + f", lr {settings.lr:g}",
                   settings.task)
    SESSIONS.add_run(session, run)  # filled in place, so a redraw during the run shows it too
    runs = SESSIONS.runs(session)
    header = (f"Fine-tuning **{md_text(bundle.name)}** on **{md_text(data.name)}** ({len(data):,} examples); "
              f"server caps: {MAX_STEPS:,} steps, {MAX_SECONDS / 60:.0f} minutes.")
    history: list[dict] = []
    none = (gr.update(),) * 5
    try:
        last_yield = 0.0
        last = None
        events = finetune(bundle.model, bundle.tokenizer, data, settings, base_name=bundle.name, stop=stop_flag)
        for ev in _friendly(events):
            last = ev
            if ev.step > 0 and ev.batch_loss is not None and not ev.is_eval:
                run["batch_steps"].append(ev.step)
                run["batch_loss"].append(ev.batch_loss)
            if ev.is_eval:
                history.append(ev.to_dict())
                run["eval_steps"].append(ev.step)
                for key in ("train_loss", "val_loss", "train_acc", "val_acc"):
                    if getattr(ev, key) is not None:
                        run[key].append(getattr(ev, key))
            now = time.perf_counter()
            if ev.done:
                break
            if ev.is_eval or now - last_yield >= STREAM_EVERY_S:
                last_yield = now
                yield (_status(ev, header), curves_figure(runs, log_scale, smoothing), _samples_md(history)) + none
        res = last.result if last is not None else None
        if res is None:  # diverged before a good evaluation: nothing stored, an earlier result stays
            gr.Warning(last.reason if last is not None else "The run ended without a result.")
            yield (_status(last, header), curves_figure(runs, log_scale, smoothing), _samples_md(history)) + none
            return
        if last.status == "diverged":  # the result is the model rolled back to its last evaluation
            gr.Warning(last.reason)
        SESSIONS.set_result(session, res)
        path = _adapter_zip(session, res, run_no)
        conf = None
        if res.task == "classification":
            split = "test" if "test" in res.confusion else "val"
            conf = confusion_figure(res.confusion[split], res.label_names, split)
        yield (_status(last, header), curves_figure(runs, log_scale, smoothing), _samples_md(history),
               _result_md(res), conf, norms_figure(res.norms, res.model.cfg.n_layers), _comparison_html(res), str(path))
    finally:
        end_training(session)


def _friendly(events):
    """The run's events, with its own errors (bad settings for this model, unusable data) as UI errors."""
    try:
        yield from events
    except (FinetuneError, LoRAError) as exc:
        raise gr.Error(str(exc), title="Cannot fine-tune") from None


def stop_run(request: gr.Request = None) -> str:
    """Ask this session's run to stop after the current step (the partly tuned model is kept)."""
    flag = SESSIONS.stop_request(session_key(request), "finetune")
    if flag is None:
        return "No fine-tuning run of yours is in progress."
    flag.set()
    return "Stopping after the current step…"


@friendly_errors
def redraw(log_scale, smoothing, request: gr.Request = None):
    return curves_figure(SESSIONS.runs(session_key(request)), bool(log_scale), float(smoothing or 0))


def clear_runs(request: gr.Request = None):
    SESSIONS.clear_runs(session_key(request))
    return curves_figure([])


@friendly_errors
def try_classifier(text, request: gr.Request = None):
    """Class probabilities from this session's tuned classifier."""
    text = check_text(text, "text", max_chars=MAX_PROMPT_CHARS)
    res = SESSIONS.result(session_key(request))
    if res is None or res.task != "classification":
        raise gr.Error("Train a classifier first (task: Classification), then try it here.")
    with torch.inference_mode():
        return res.predict_proba(text)


@friendly_errors
def try_instruction(instruction, inp, model_name, request: gr.Request = None):
    """The base model's and the tuned model's answers to the same instruction, side by side."""
    instruction = check_text(instruction, "instruction", max_chars=MAX_PROMPT_CHARS)
    inp = check_text(inp, "input", max_chars=MAX_PROMPT_CHARS, allow_empty=True)
    res = SESSIONS.result(session_key(request))
    if res is None or res.task != "instruction":
        raise gr.Error("Instruction-tune a model first (task: Instruction following), then ask it here.")
    entry = {"instruction": instruction, "input": inp}
    bundle = get_bundle(res.info.base_model or model_name)
    return respond(bundle.model, bundle.tokenizer, entry, 48), respond(res.model, res.tokenizer, entry, 48)


@friendly_errors
def load_adapter_file(upload, model_name, request: gr.Request = None):
    """Re-apply a downloaded adapter to the active model (checked: it must be the adapter's base)."""
    if not upload:
        raise gr.Error("Choose an adapter first: the zip this tab offers (or peft's adapter folder, zipped), "
                       "or an older .safetensors adapter file.")
    bundle = get_bundle(model_name)
    _check_memory(bundle, f"{bundle.name} with an adapter")
    try:
        if is_peft_upload(upload):
            model, info = load_peft_adapter(upload, bundle.model, base_name=bundle.name)
        else:
            model, info = load_adapter(upload, bundle.model)
    except LoRAError as exc:
        raise gr.Error(str(exc), title="Adapter does not fit") from None
    from llm_core.finetune import FinetuneResult
    from llm_core.lora import count_parameters
    info.base_model = bundle.name  # it fitted (fingerprint or shapes): the active model is its base
    task = info.extra.get("task", "instruction")
    res = FinetuneResult(task=task, method=info.method, model=model, tokenizer=bundle.tokenizer, info=info,
                         counts=count_parameters(model), history=[], status="loaded", reason="loaded from a file",
                         label_names=list(info.extra.get("labels", [])),
                         max_length=int(info.extra.get("max_length", bundle.config.context_length)))
    SESSIONS.set_result(session_key(request), res)
    return (f"Loaded a **{md_text(info.method)}** adapter ({md_text(task)}) trained on "
            f"**{md_text(info.base_model)}**; try it below.")


def _counts_once(shown, task, method, rank, alpha, targets, model_name, scaling=None):
    if shown:
        return gr.skip()
    try:
        return parameter_counts(task, method, rank, alpha, targets, model_name, scaling)
    except gr.Error:
        return ""


def _task_changed(task):
    is_cls = task == TASK_CLS
    own = DATASETS.get(task, DATASETS[TASK_CLS])
    choices = own + [d for d in ALL_DATASETS if d not in own]
    return (gr.update(choices=choices, value=own[0]), gr.update(visible=not is_cls),
            gr.update(visible=is_cls), gr.update(visible=not is_cls))


# ---------------------------------------------------------------- the tab

def build(ctx) -> None:
    with gr.Tab("8 · Fine-tune", id="finetune", elem_id="tab-finetune") as tab:
        gr.Markdown(
            "### Fine-tuning: classification and instructions, with LoRA\n"
            "Start from the active model (top of the page) and teach it a task. **LoRA** (appendix E) freezes "
            "the model and learns a small update W + s·A·B per chosen layer (s = α/r as in `peft`, or α as in "
            "the book's `LoRALayer`: pick below); the book's chapter 6 recipe "
            "trains only the last block and a new head; a full fine-tune trains everything. The shared model "
            "is never changed: you train a copy, and the result belongs to your session.")
        with gr.Row():
            with gr.Column(scale=1):
                task = gr.Radio([TASK_CLS, TASK_INS], value=TASK_CLS, label="Task", elem_id="ft-task",
                                info="Classification: a new output head with one logit per class, read at the "
                                     "last token. Instructions: the Alpaca prompt, next-token loss on the answer.")
                dataset = gr.Dropdown(ALL_DATASETS, value=DS_CLS_BUILTIN, label="Data set", elem_id="ft-dataset",
                                      info="Built-in sets come from this Python's own docs; the book's need network; "
                                           "or upload yours (≤ 5 MB, UTF-8).")
                upload = gr.File(label="Your CSV (text,label) or JSON (instruction, input, output)",
                                 file_types=[".csv", ".json"], type="filepath", elem_id="ft-upload")
                with gr.Row():
                    preview_btn = gr.Button("Preview data set", size="sm", elem_id="ft-preview")
                data_info = gr.Markdown(elem_id="ft-data-info")
                method = gr.Radio(list(METHODS), value=M_LORA, label="Method", elem_id="ft-method",
                                  info="LoRA trains ~1-5 % of the weights; 'last block' is the book's 7.1 recipe; "
                                       "full trains every weight (slow and memory-hungry).")
                with gr.Row():
                    rank = gr.Number(8, label="LoRA rank r", precision=0, elem_id="ft-rank",
                                     info="Width of A and B: update has rank ≤ r (the book uses 16).")
                    alpha = gr.Number(16, label="LoRA alpha α", elem_id="ft-alpha",
                                      info="The update's scale is α/r or α (below); the book uses α = r = 16.")
                scaling = gr.Radio(list(SCALINGS), value=SC_PEFT, label="LoRA scaling", elem_id="ft-scaling",
                                   info="alpha/rank: × α/r, as peft and the adapter files use. book (alpha): × α, "
                                        "as the book's LoRALayer (× 16 at α = r = 16). Saved adapters record the "
                                        "scale either way, so they reload and export the same.")
                targets = gr.CheckboxGroup(TARGET_CHOICES, value=DEFAULT_TARGETS, label="LoRA on these layers",
                                           elem_id="ft-targets",
                                           info="Per transformer block; the output head is the big vocab layer "
                                                "(for classification the new small head is always trained).")
                counts_md = gr.Markdown(elem_id="ft-counts")  # filled when the tab opens
            with gr.Column(scale=1):
                with gr.Row():
                    epochs = gr.Number(1, label="Epochs", precision=0, elem_id="ft-epochs",
                                       info="Passes over the training split (the run also stops at max steps).")
                    steps = gr.Number(60, label="Max steps", precision=0, elem_id="ft-steps",
                                      info=f"Optimizer steps; this server caps at {MAX_STEPS:,} and "
                                           f"{MAX_SECONDS / 60:.0f} minutes.")
                with gr.Row():
                    batch = gr.Number(8, label="Batch size", precision=0, elem_id="ft-batch",
                                      info="Examples per step (the book uses 8).")
                    lr = gr.Number(1e-3, label="Learning rate", elem_id="ft-lr",
                                   info="AdamW (weight decay 0.1). LoRA likes ~1e-3; full/last-block ~5e-5 (book).")
                with gr.Row():
                    eval_interval = gr.Number(10, label="Evaluate every", precision=0, elem_id="ft-eval",
                                              info="Steps between train/validation evaluations (4 batches each).")
                    seed = gr.Number(123, label="Seed", precision=0, elem_id="ft-seed",
                                     info="Fixes the new weights (LoRA A, head) and the shuffle order.")
                with gr.Row():
                    max_length = gr.Number(128, label="Max tokens per example", precision=0, elem_id="ft-maxlen",
                                           info="Longer examples are cut (never beyond the model's context).")
                    mask = gr.Checkbox(False, label="Loss on the response only", elem_id="ft-mask", visible=False,
                                       info="Mask the instruction part of the targets with -100 (optional in the book).")
                with gr.Row():
                    start = gr.Button("Start fine-tuning", variant="primary", elem_id="ft-start")
                    stop = gr.Button("Stop", variant="stop", elem_id="ft-stop")
                status = gr.Markdown("Press **Start fine-tuning**.", elem_id="ft-status")
        plot = gr.Plot(curves_figure([]), label="Training curves", elem_id="ft-plot")
        with gr.Row():
            log_scale = gr.Checkbox(False, label="Log-scale loss", elem_id="ft-log",
                                    info="Spot slow late progress.")
            smoothing = gr.Slider(0, 0.95, value=0.6, step=0.05, label="Smoothing (batch loss EMA)",
                                  elem_id="ft-smooth", info="Only the thin batch-loss line is smoothed.")
            clear_btn = gr.Button("Clear earlier runs", size="sm", elem_id="ft-clear")
        samples = gr.HTML("<i>Held-out answers appear here at each evaluation (instruction tuning).</i>",
                          elem_id="ft-samples")
        results_md = gr.Markdown(elem_id="ft-results")
        with gr.Row():
            confusion = gr.Plot(note_figure("A classification run's confusion matrix appears here."),
                                label="Confusion matrix", elem_id="ft-confusion")
            norms = gr.Plot(note_figure("After a LoRA run: how much each layer changed appears here."),
                            label="What LoRA changed", elem_id="ft-norms")
        comparison = gr.HTML(elem_id="ft-comparison")
        adapter_file = gr.File(label="Download the result (zip): a LoRA adapter in peft's format "
                                     "(adapter_config.json + adapter_model.safetensors), or the whole tuned model "
                                     "for last-block / full", elem_id="ft-adapter", interactive=False)
        with gr.Group(visible=True) as try_cls:
            gr.Markdown("#### Try the classifier")
            with gr.Row():
                cls_text = gr.Textbox(label="Text", lines=2, max_length=MAX_PROMPT_CHARS, elem_id="ft-try-text",
                                      value="Return the number of items in the container.", scale=3)
                cls_btn = gr.Button("Classify", elem_id="ft-try-cls", scale=1)
            cls_out = gr.Label(label="Class probabilities", elem_id="ft-try-probs")
        with gr.Group(visible=False) as try_ins:
            gr.Markdown("#### Ask the base and the tuned model the same thing")
            with gr.Row():
                ins_text = gr.Textbox(label="Instruction", value="Reverse the following word.",
                                      max_length=MAX_PROMPT_CHARS, elem_id="ft-try-instruction")
                ins_input = gr.Textbox(label="Input (optional)", value="module", max_length=MAX_PROMPT_CHARS,
                                       elem_id="ft-try-input")
                ins_btn = gr.Button("Ask both", elem_id="ft-try-ask")
            with gr.Row():
                base_out = gr.Textbox(label="Base model", elem_id="ft-try-base")
                tuned_out = gr.Textbox(label="Tuned model", elem_id="ft-try-tuned")
        with gr.Accordion("Load an adapter file", open=False):
            with gr.Row():
                adapter_upload = gr.File(label="Adapter: a peft adapter folder zipped (.zip), or an older "
                                               ".safetensors adapter", file_types=[".zip", ".safetensors"],
                                         type="filepath", elem_id="ft-adapter-upload")
                adapter_btn = gr.Button("Apply to the active model", elem_id="ft-adapter-apply")
            adapter_md = gr.Markdown(elem_id="ft-adapter-out")
        hub_export.build(_export_source, "finetune", "ft",
                         "This session's result: a LoRA run as a peft adapter (load it on the exported base "
                         "with `peft.PeftModel.from_pretrained`), a last-block or full run as the whole model.")

        gr.Examples(
            examples=[
                [TASK_CLS, M_LORA, 8, 16, 1, 60, 8, 1e-3],
                [TASK_CLS, M_LAST, 8, 16, 1, 60, 8, 5e-4],
                [TASK_INS, M_LORA, 16, 32, 1, 100, 8, 1e-3],
            ],
            inputs=[task, method, rank, alpha, epochs, steps, batch, lr],
            label="Starting points on the built-in data (then press Start)")

        task.change(_task_changed, task, [dataset, mask, try_cls, try_ins], queue=False, api_visibility="private")
        count_inputs = [task, method, rank, alpha, targets, ctx.model_name, scaling]
        for comp in (task, method, rank, alpha, targets, scaling):
            comp.change(parameter_counts, count_inputs, counts_md, queue=False, api_visibility="private")
        ctx.model_changed.change(parameter_counts, count_inputs, counts_md, queue=False, api_visibility="private")
        # Counted when the tab is opened, not at start-up (the first count warms up torch's meta device).
        tab.select(_counts_once, [counts_md, *count_inputs], counts_md, queue=False, api_visibility="private")
        preview_btn.click(preview_data, [task, dataset, upload], data_info, api_name="finetune_preview_data",
                          concurrency_id="ft-data")
        start.click(run_finetune,
                    [task, dataset, upload, method, rank, alpha, targets, epochs, steps, batch, lr, eval_interval,
                     seed, max_length, mask, log_scale, smoothing, ctx.model_name, scaling],
                    [status, plot, samples, results_md, confusion, norms, comparison, adapter_file],
                    concurrency_id="training", concurrency_limit=2, show_progress_on=[status], api_name="finetune")
        stop.click(stop_run, None, status, queue=False, api_name="finetune_stop")
        for ctrl in (log_scale, smoothing):
            ctrl.change(redraw, [log_scale, smoothing], plot, queue=False, api_visibility="private")
        clear_btn.click(clear_runs, None, plot, queue=False, api_visibility="private")
        cls_btn.click(try_classifier, cls_text, cls_out, api_name="finetune_classify", concurrency_id="cpu-heavy")
        ins_btn.click(try_instruction, [ins_text, ins_input, ctx.model_name], [base_out, tuned_out],
                      api_name="finetune_ask", concurrency_id="cpu-heavy")
        adapter_btn.click(load_adapter_file, [adapter_upload, ctx.model_name], adapter_md,
                          api_name="finetune_load_adapter", concurrency_id="cpu-heavy")
