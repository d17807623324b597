"""Stage 7 · Generation playground: decoding strategies made visible (book chapter 5.3).

All decoding comes from ``llm_core.generation``: the logits steps (temperature, top-k,
top-p), the sampling with a per-request generator, the per-step candidates, the KV cache.
This module validates input, keeps the last run per session, and draws.
"""
from __future__ import annotations

import math
import time
from dataclasses import replace

import gradio as gr
import numpy as np
import plotly.graph_objects as go
import torch

from llm_core.generation import (
    BOOK_TOY_LOGITS, BOOK_TOY_VOCAB, SamplingSettings, Step, encode_prompt_keep_last, make_generator, measure_speed,
    next_token_logits, prepare_for_decoding, softmax_with_temperature, stream_generate, summarize_steps,
    token_pieces,
)
from llm_core.quantize import PRECISIONS
from llm_core.views.token_text import show_text, token_label
from tabs.common import CPU_HEAVY, check_choice, check_float, check_int, check_text, friendly_errors, get_bundle
from tabs.figures import note_figure
from tabs.markup import html_text, md_code, md_text, plot_text

# ---------------------------------------------------------------- limits and choices

MAX_NEW_TOKENS = 256          # server cap per run
MAX_PROMPT_CHARS = 20_000
MAX_TEMPERATURE = 10.0
MAX_SEED = 2**31 - 1
TIME_LIMIT_S = 120.0          # a run stops here even if tokens are left
YIELD_EVERY_S = 0.2           # stream text at most this often (each yield resends the output)
CHART_EVERY_S = 1.5           # and the live charts at most this often
N_CANDIDATES = 10
SPEED_MAX_TOKENS = 128
SPEED_TIME_LIMIT_S = 30.0     # per side (cache on / off)
MAX_TEMPERATURES_PLOTTED = 6
RUNNING = "generating…"

SAMPLING_PRESETS = {
    "Greedy (argmax)": (0.0, 0, 1.0),
    "Plain sampling (T 1)": (1.0, 0, 1.0),
    "Cold sampling (T 0.5)": (0.5, 0, 1.0),
    "Book: top-k 25, T 1.4": (1.4, 25, 1.0),
    "Top-p 0.9 (nucleus)": (1.0, 0, 0.9),
    "Top-k 50 + top-p 0.95, T 0.8": (0.8, 50, 0.95),
}
DEFAULT_SAMPLING_PRESET = "Top-k 50 + top-p 0.95, T 0.8"

EXAMPLES = [
    # prompt, temperature, top-k, top-p, max new tokens, seed
    ["Every effort moves you", 0.0, 0, 1.0, 30, 123],
    ["The for statement is used to", 0.8, 50, 0.95, 60, 123],
    ["A dictionary is", 1.4, 25, 1.0, 60, 7],
    ["To open a file, call", 1.0, 0, 0.9, 60, 42],
    ["", 1.0, 0, 1.0, 40, 1],
]

TEMP_SOURCE_BOOK = "The book's example: next word after “every effort moves you”"
TEMP_SOURCE_STEP = "The selected step of your last run (the model's real logits)"

INTRO = """\
A GPT only ever predicts **one next token**: a probability for every token in the vocabulary.
*Decoding* chooses one, appends it and asks again. **Greedy** takes the most likely token
(repetitive, always the same text); **sampling** draws from the distribution, shaped by
**temperature** (logits ÷ T: below 1 sharper, above 1 flatter), **top-k** (keep the k most
likely) and **top-p** (keep the smallest set whose probability reaches p). Here they run in
that order. Click any generated token to see what the model was choosing from at that step.
"""

PROB_BINS = ((0.8, "gen-p5", "≥ 80 %"), (0.5, "gen-p4", "50–80 %"), (0.2, "gen-p3", "20–50 %"),
             (0.05, "gen-p2", "5–20 %"), (0.0, "gen-p1", "< 5 %"))

LEGEND = ('<div class="gen-legend"><b>model probability of each picked token:</b>'
          + "".join(f'<span class="{cls}">{label}</span>' for _, cls, label in PROB_BINS)
          + '<span class="gen-forced">forced by a branch</span></div>')

# Clicking a token selects its step (event delegation survives re-renders).
CLICK_JS = ("element.addEventListener('click', (e) => { const t = e.target.closest('[data-step]'); "
            "if (t) { trigger('click', {step: parseInt(t.dataset.step)}); } });")


# ---------------------------------------------------------------- input checks

def read_settings(temperature, top_k, top_p, max_new_tokens, stop_at_eot, use_cache, bundle,
                  label: str = "") -> tuple[SamplingSettings, list[str]]:
    """Validate the knobs on the server; return settings and notices for the user."""
    notices = []
    try:
        t = float(temperature)
    except (TypeError, ValueError):
        raise gr.Error(f"{label}Temperature must be a number (got {temperature!r}).") from None
    if not math.isfinite(t) or t > MAX_TEMPERATURE:
        raise gr.Error(f"{label}Temperature must be at most {MAX_TEMPERATURE:g} (got {temperature}); "
                       "0 means greedy, 0.5–1.5 is the useful range.")
    if t < 0:
        notices.append(f"{label}Temperature {t:g} is below 0: decoding greedily (argmax) instead.")
        t = 0.0
    vocab = min(bundle.config.vocab_size, bundle.tokenizer.n_vocab)
    k = check_int(0 if top_k in (None, "") else top_k, f"{label}Top-k (0 = off)", 0, vocab)
    p = check_float(1.0 if top_p in (None, "") else top_p, f"{label}Top-p (1 = off)", 0.0, 1.0, lo_open=True)
    n = check_int(max_new_tokens, "Max new tokens", 1, 10**9)
    if n > MAX_NEW_TOKENS:
        notices.append(f"Max new tokens {n:,} is above this server's cap: generating {MAX_NEW_TOKENS}.")
        n = MAX_NEW_TOKENS
    if t == 0.0 and (k or p < 1.0):
        notices.append(f"{label}Temperature 0 is greedy: top-k/top-p do not change the argmax.")
    eos = bundle.tokenizer.eot_id if stop_at_eot else None
    if stop_at_eot and eos is None:
        notices.append("This model's tokenizer has no <|endoftext|> token: generation runs to the limit.")
    settings = SamplingSettings(temperature=t, top_k=k or None, top_p=p if p < 1.0 else None,
                                max_new_tokens=n, eos_id=eos, use_cache=bool(use_cache),
                                n_candidates=N_CANDIDATES)
    return settings.check(vocab), notices


def decoding_bundle(model_name, precision="fp32"):
    """The shared model, with its weights laid out for fast one-token steps (done once; the
    shared models are never trained in place); for ``int8``, its int8 copy (made once); with a
    CUDA GPU, fp32 decodes on a GPU copy."""
    bundle = get_bundle(model_name)
    prepare_for_decoding(bundle.model)
    if precision in (None, "", "fp32"):
        return replace(bundle, model=bundle.for_precision("fp32"))  # on the GPU when there is one
    check_choice(precision, PRECISIONS, "Precision")
    if bundle.model.device.type != "cpu":
        raise gr.Error(f"int8 decoding is a CPU path; {bundle.name} runs on {bundle.model.device}. Choose fp32.")
    return replace(bundle, model=bundle.for_precision(precision))


def read_seed(seed) -> int:
    if seed is None or seed == "":
        return int(torch.randint(0, MAX_SEED, (1,), generator=make_generator(None)))
    return check_int(seed, "Seed", 0, MAX_SEED)


def read_prompt(prompt, bundle) -> tuple[list[int], str, int, bool, list[str]]:
    """(model ids, prompt text, tokens dropped, started from <|endoftext|>, notices)."""
    text = check_text(prompt, "prompt", max_chars=MAX_PROMPT_CHARS, allow_empty=True)
    try:
        enc = encode_prompt_keep_last(bundle.tokenizer, text, bundle.config.context_length)
    except ValueError as exc:
        raise gr.Error(f"The {exc}. Type a prompt first.") from None
    notices = []
    if enc.from_endoftext:
        notices.append("The prompt is empty: generating from <|endoftext|> (what the model writes unprompted).")
    if enc.dropped:
        notices.append(f"The prompt has {len(enc.ids) + enc.dropped:,} tokens but the model sees "
                       f"{bundle.config.context_length:,}: the first {enc.dropped:,} were dropped (truncated from "
                       "the left).")
    return enc.ids, ("" if enc.from_endoftext else text), enc.dropped, enc.from_endoftext, notices


def _warn(notices):
    for n in notices:
        gr.Warning(n)


# ---------------------------------------------------------------- a run, kept per session

def step_record(tokenizer, step: Step, forced: bool = False) -> dict:
    return {
        "token_id": step.token_id, "token": tokenizer.token_str(step.token_id),
        "p": step.prob_before, "p_sampled": step.prob_after,
        "entropy_bits": step.entropy_bits, "entropy_sampled_bits": step.entropy_after_bits,
        "kept": step.kept, "from_cache": step.from_cache, "positions": step.positions,
        "elapsed_s": step.elapsed_s, "is_eos": step.is_eos, "forced": forced,
        "candidates": [{"token_id": c.token_id, "token": tokenizer.token_str(c.token_id),
                        "p": c.prob_before, "p_sampled": c.prob_after} for c in step.candidates],
    }


def as_step(rec: dict) -> Step:
    """A stored record back as a Step (for llm_core's summaries)."""
    return Step(index=0, token_id=rec["token_id"], prob_before=rec["p"], prob_after=rec["p_sampled"],
                entropy_bits=rec["entropy_bits"], entropy_after_bits=rec["entropy_sampled_bits"],
                kept=rec["kept"], from_cache=rec["from_cache"], positions=rec["positions"],
                elapsed_s=rec["elapsed_s"], is_eos=rec["is_eos"])


def new_run(bundle, prompt_ids, prompt_text, dropped, from_eot, settings, seed, notices) -> dict:
    return {"model": bundle.name, "prompt_ids": list(prompt_ids), "prompt_text": prompt_text,
            "dropped": dropped, "from_eot": from_eot, "settings": settings_dict(settings), "seed": seed,
            "steps": [], "notices": list(notices), "end": "", "branch": None, "time_offset": 0.0,
            "precision": getattr(bundle.model, "precision", "fp32")}


def settings_dict(s: SamplingSettings) -> dict:
    return {"temperature": s.temperature, "top_k": s.top_k, "top_p": s.top_p,
            "max_new_tokens": s.max_new_tokens, "stop_at_endoftext": s.eos_id is not None,
            "use_cache": s.use_cache, "strategy": s.describe()}


def generated_ids(run) -> list[int]:
    return [r["token_id"] for r in run["steps"] if not r["is_eos"]]


def run_text(run, tokenizer) -> str:
    return run["prompt_text"] + tokenizer.decode(generated_ids(run))


def drive(run, bundle, model_ids, settings, seed):
    """Stream steps into ``run``; yields (run, final) at most every YIELD_EVERY_S."""
    generator = make_generator(seed)
    vocab = min(bundle.config.vocab_size, bundle.tokenizer.n_vocab)
    last_yield = 0.0
    started = time.perf_counter()
    run["end"] = RUNNING
    offset = run.get("time_offset", 0.0)
    for step in stream_generate(bundle.model, model_ids, settings, generator, vocab_size=vocab):
        rec = step_record(bundle.tokenizer, step)
        rec["elapsed_s"] += offset
        run["steps"].append(rec)
        now = time.perf_counter()
        if now - started > TIME_LIMIT_S:
            run["end"] = f"stopped after the server's {TIME_LIMIT_S:.0f} s limit"
            break
        if step.is_eos:
            run["end"] = "stopped at <|endoftext|>"
            break
        if now - last_yield >= YIELD_EVERY_S or len(run["steps"]) == 1:
            last_yield = now
            yield run, False
    if run["end"] == RUNNING:
        run["end"] = f"reached max new tokens ({len(run['steps'])})"
    yield run, True


# ---------------------------------------------------------------- rendering

def _bin(p: float) -> str:
    for lo, cls, _ in PROB_BINS:
        if p >= lo:
            return cls
    return PROB_BINS[-1][1]


def _pct(p: float) -> str:
    return f"{100 * p:.1f} %" if p >= 0.001 else f"{100 * p:.2g} %"


def shown_piece(piece: str) -> str:
    """Escaped token text that stays visible and clickable: newlines get a ↵ mark, and a token
    holding only part of a character (completed by the next token) a small placeholder."""
    if not piece:
        return '<span class="gen-mark" title="part of a character that the next token completes">◦</span>'
    return html_text(piece).replace("\n", '<span class="gen-mark">↵</span>\n')


def render_html(run, tokenizer, selected: int | None = None) -> str:
    if run is None:
        return '<div class="gen-out gen-empty">The generated text appears here, each token coloured ' \
                       'by how likely the model thought it was.</div>'
    prompt_ids = run["prompt_ids"]
    gen = generated_ids(run)
    pieces = token_pieces(tokenizer, prompt_ids + gen)
    parts = ['<div class="gen-out">']
    if run["dropped"]:
        parts.append(f'<span class="gen-dropped">[… {run["dropped"]:,} earlier tokens the model cannot see] </span>')
    if run["from_eot"]:
        parts.append('<span class="gen-special" title="generation started from the end-of-text token">'
                     '&lt;|endoftext|&gt;</span>')
    else:
        parts.append(f'<span class="gen-prompt">{html_text("".join(pieces[:len(prompt_ids)]))}</span>')
    for i, (rec, piece) in enumerate(zip(run["steps"], pieces[len(prompt_ids):])):
        cls = ["gen-tok", _bin(rec["p"])]
        if i == selected:
            cls.append("gen-sel")
        if rec["forced"]:
            cls.append("gen-forced")
        title = (f'step {i + 1} · id {rec["token_id"]} · model {_pct(rec["p"])} · sampled from '
                 f'{_pct(rec["p_sampled"])} · entropy {rec["entropy_bits"]:.2f} bits')
        parts.append(f'<span class="{" ".join(cls)}" data-step="{i}" title="{html_text(title)}">'
                     f'{shown_piece(piece)}</span>')
    if run["steps"] and run["steps"][-1]["is_eos"]:
        i = len(run["steps"]) - 1
        rec = run["steps"][-1]
        sel = " gen-sel" if i == selected else ""
        parts.append(f'<span class="gen-special gen-tok{sel}" data-step="{i}" title="step {i + 1}: the stop token, '
                     f'model {_pct(rec["p"])}">&lt;|endoftext|&gt; stop</span>')
    parts.append("</div>" + LEGEND)
    return "".join(parts)


def render_stats(run) -> str:
    if run is None or not run["steps"]:
        return ""
    s = summarize_steps([as_step(r) for r in run["steps"]])
    cfg = run["settings"]
    positions = sum(r["positions"] for r in run["steps"])
    lines = [
        f'**{s.tokens} tokens** · **{s.tokens_per_s:.1f} tokens/s** · first token after '
        f'{1000 * s.first_token_s:.0f} ms · KV cache {"on" if cfg["use_cache"] else "off"} '
        f'({positions:,} positions through the model) · {run.get("precision", "fp32")} weights · '
        f'**{cfg["strategy"]}** · seed {run["seed"]} · '
        f'{run["end"]}',
        f'average model probability of the picks {_pct(s.mean_prob)} · surprisal {s.surprisal_bits:.2f} bits/token '
        f'(perplexity {2 ** s.surprisal_bits:,.1f}) · mean entropy {s.mean_entropy_bits:.2f} bits · '
        f'distinct tokens {100 * s.distinct:.0f} %',
    ]
    if run["branch"]:
        b = run["branch"]
        lines.append(f'Branched at step {b["at"] + 1}: {md_code(show_text(b["new"]))} instead of {md_code(show_text(b["old"]))}.')
    lines += [f"⚠ {md_text(n)}" for n in run["notices"]]
    return "\n\n".join(lines)


def steps_json(run) -> dict:
    if run is None:
        return {}
    return {"model": run["model"], "settings": run["settings"], "seed": run["seed"],
            "prompt_tokens": len(run["prompt_ids"]), "dropped_prompt_tokens": run["dropped"], "end": run["end"],
            "steps": [{"step": i + 1, **{k: v for k, v in r.items()}} for i, r in enumerate(run["steps"])]}


def step_figure(run, i: int | None) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(height=380, margin=dict(l=10, r=10, t=50, b=40), barmode="group",
                      legend=dict(orientation="h", y=-0.12), xaxis=dict(title="probability", tickformat=".0%"))
    if run is None or not run["steps"] or i is None:
        return note_figure("Press Generate: each step's top candidates appear here.", height=380)
    rec = run["steps"][i]
    cands = list(rec["candidates"])
    if rec["token_id"] not in [c["token_id"] for c in cands]:
        cands.append({"token_id": rec["token_id"], "token": rec["token"], "p": rec["p"], "p_sampled": rec["p_sampled"]})
    labels, seen = [], set()
    for rank, c in enumerate(cands):
        label = show_text(c["token"])  # a run keeps token strings (its API record), not the tokenizer
        while label in seen:  # two ids that display alike still get their own bar
            label += "\u200b"
        seen.add(label)
        labels.append(("▶ " if c["token_id"] == rec["token_id"] else "") + label)
    before = np.array([c["p"] for c in cands], dtype=np.float32)
    after = np.array([c["p_sampled"] for c in cands], dtype=np.float32)
    ids = [c["token_id"] for c in cands]
    fig.add_bar(y=labels, x=before, orientation="h", name="model (T 1, unfiltered)", marker_color="#9aa7b8",
                customdata=ids, hovertemplate="%{y} (id %{customdata}): %{x:.2%}<extra>model</extra>")
    fig.add_bar(y=labels, x=after, orientation="h", name="sampled from (after T / top-k / top-p)",
                marker_color=["#1f4fd1" if t == rec["token_id"] else "#6d8fe6" for t in ids],
                customdata=ids, hovertemplate="%{y} (id %{customdata}): %{x:.2%}<extra>sampled from</extra>")
    how = "forced by your branch" if rec["forced"] else ("stop token" if rec["is_eos"] else "picked")
    fig.update_layout(
        title=dict(text=f"Step {i + 1}: {plot_text(show_text(rec['token']))} {how} · model {_pct(rec['p'])} → "
                        f"{_pct(rec['p_sampled'])} · {rec['kept']:,} tokens left after filtering", font_size=14),
        yaxis=dict(autorange="reversed", type="category"))
    return fig


def entropy_figure(run, selected: int | None) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(height=230, margin=dict(l=10, r=10, t=36, b=30), legend=dict(orientation="h", y=-0.25),
                      yaxis=dict(title="bits", rangemode="tozero"), xaxis=dict(title=None),
                      title=dict(text="how unsure the model was at each step", font_size=13))
    if run is None or not run["steps"]:
        return note_figure("Press Generate: how unsure the model was at each step appears here.", height=230)
    x = np.arange(1, len(run["steps"]) + 1, dtype=np.float32)
    h = np.array([r["entropy_bits"] for r in run["steps"]], dtype=np.float32)
    h_after = np.array([r["entropy_sampled_bits"] for r in run["steps"]], dtype=np.float32)
    toks = [show_text(r["token"]) for r in run["steps"]]
    fig.add_scatter(x=x, y=h, mode="lines+markers", name="model", line_color="#7a869a", marker_size=4,
                    text=toks, hovertemplate="step %{x}: %{text}<br>%{y:.2f} bits<extra>model</extra>")
    fig.add_scatter(x=x, y=h_after, mode="lines", name="sampled from", line=dict(color="#1f4fd1", dash="dot"),
                    hovertemplate="step %{x}: %{y:.2f} bits<extra>after filtering</extra>")
    if selected is not None and 0 <= selected < len(x):
        fig.add_vline(x=selected + 1, line_color="#1f4fd1", line_width=1)
    return fig


def step_detail(run, i: int | None) -> str:
    if run is None or not run["steps"] or i is None:
        return ""
    r = run["steps"][i]
    where = "the KV cache (one new position)" if r["from_cache"] else f'a full pass over {r["positions"]} positions'
    return (f'**Step {i + 1}** picked {md_code(show_text(r["token"]))} (id {r["token_id"]}): '
            f'{_pct(r["p"])} in the model\'s distribution, {_pct(r["p_sampled"])} in the one sampled from; '
            f'{r["kept"]:,} tokens could have been picked · entropy {r["entropy_bits"]:.2f} → '
            f'{r["entropy_sampled_bits"]:.2f} bits · logits from {where}.')


def branch_choices(run, i: int | None):
    if run is None or not run["steps"] or i is None:
        return gr.update(choices=[], value=None)
    rec = run["steps"][i]
    choices = [(f'{show_text(c["token"])}  ({_pct(c["p"])})', c["token_id"]) for c in rec["candidates"]
               if c["token_id"] != rec["token_id"]]
    return gr.update(choices=choices, value=choices[0][1] if choices else None)


def _slider(run, value):
    n = len(run["steps"]) if run else 0
    # a slider needs minimum < maximum; select_step clamps to the steps that exist
    return gr.update(minimum=1, maximum=max(n, 2), value=value + 1 if n else 1, step=1, interactive=n > 1)


def all_outputs(run, tokenizer, selected: int | None):
    return (render_html(run, tokenizer, selected), run_text(run, tokenizer), render_stats(run), steps_json(run),
            _slider(run, selected or 0), step_detail(run, selected), step_figure(run, selected),
            entropy_figure(run, selected), branch_choices(run, selected), run)


def live_outputs(run, tokenizer, charts: bool):
    """While streaming: the text and stats (and now and then the charts). The state is kept
    current too, so that Stop can show the partial run."""
    last = len(run["steps"]) - 1
    skip = gr.skip()
    return (render_html(run, tokenizer), run_text(run, tokenizer), render_stats(run), skip, skip, skip,
            step_figure(run, last) if charts else skip, entropy_figure(run, None) if charts else skip, skip, run)


def _stream_outputs(run, bundle, model_ids, settings, seed):
    last_chart = time.perf_counter()
    for run, final in drive(run, bundle, model_ids, settings, seed):
        if final:
            selected = run["branch"]["at"] if run["branch"] else 0
            yield all_outputs(run, bundle.tokenizer, selected)
        else:
            charts = time.perf_counter() - last_chart >= CHART_EVERY_S
            if charts:
                last_chart = time.perf_counter()
            yield live_outputs(run, bundle.tokenizer, charts)


# ---------------------------------------------------------------- handlers

@friendly_errors
def generate_text(prompt, temperature, top_k, top_p, max_new_tokens, seed, stop_at_eot, use_cache, model_name,
                  precision="fp32"):
    """Stream a generation; each yield: html, text, stats, steps JSON, step slider, step text,
    step chart, entropy chart, branch choices, run state."""
    bundle = decoding_bundle(model_name, precision)
    settings, notices = read_settings(temperature, top_k, top_p, max_new_tokens, stop_at_eot, use_cache, bundle)
    seed = read_seed(seed)
    ids, text, dropped, from_eot, prompt_notices = read_prompt(prompt, bundle)
    notices = prompt_notices + notices
    _warn(notices)
    run = new_run(bundle, ids, text, dropped, from_eot, settings, seed, notices)
    yield from _stream_outputs(run, bundle, ids, settings, seed)


@friendly_errors
def branch(run, at, token_id, temperature, top_k, top_p, max_new_tokens, seed, stop_at_eot, use_cache, model_name,
           precision="fp32"):
    """Force another candidate at step ``at`` (1-based) and continue generating from there."""
    if not run or not run.get("steps"):
        raise gr.Error("Generate some text first, then pick a step and one of its alternatives.")
    bundle = decoding_bundle(run["model"], precision)
    if model_name and model_name != run["model"]:
        raise gr.Error(f"This run was made with {run['model']}; the active model is now {model_name}. "
                       "Generate again before branching.")
    i = check_int(at, "Step", 1, len(run["steps"])) - 1
    if token_id in (None, ""):
        raise gr.Error("Choose which alternative token to force at this step.")
    token_id = check_int(token_id, "Alternative token id", 0, bundle.config.vocab_size - 1)
    old = run["steps"][i]
    cand = next((c for c in old["candidates"] if c["token_id"] == token_id), None)
    if cand is None:
        raise gr.Error(f"Token id {token_id} is not among step {i + 1}'s candidates; pick one from the list.")
    settings, notices = read_settings(temperature, top_k, top_p, max_new_tokens, stop_at_eot, use_cache, bundle)
    seed = read_seed(seed)
    _warn(notices)
    remaining = settings.max_new_tokens - (i + 1)
    forced = {**old, "token_id": token_id, "token": cand["token"], "p": cand["p"], "p_sampled": cand["p_sampled"],
              "is_eos": token_id == settings.eos_id, "forced": True}
    new = {**run, "steps": [dict(r) for r in run["steps"][:i]] + [forced], "settings": settings_dict(settings),
           "seed": seed, "notices": notices, "time_offset": forced["elapsed_s"],
           "branch": {"at": i, "old": old["token"], "new": cand["token"],
                      "previous_text": run_text(run, bundle.tokenizer)}}
    if forced["is_eos"] or remaining <= 0:
        new["end"] = "stopped at <|endoftext|>" if forced["is_eos"] else f"reached max new tokens ({settings.max_new_tokens})"
        yield all_outputs(new, bundle.tokenizer, i)
        return
    model_ids = new["prompt_ids"] + [r["token_id"] for r in new["steps"]]
    yield from _stream_outputs(new, bundle, model_ids, settings.with_(max_new_tokens=remaining), seed)


@friendly_errors
def select_step(run, step):
    """Show one step: its bar chart, description, branch choices, and the highlighted token."""
    if not run or not run.get("steps"):
        return (render_html(None, None), "", step_figure(None, None), entropy_figure(None, None),
                gr.update(choices=[], value=None))
    i = min(max(check_int(step, "Step", 1, 10**9), 1), len(run["steps"])) - 1
    tok = get_bundle(run["model"]).tokenizer
    return (render_html(run, tok, i), step_detail(run, i), step_figure(run, i), entropy_figure(run, i),
            branch_choices(run, i))


def stopped(run):
    """After Stop cancelled a run: say so and show the steps made so far."""
    if not run or run.get("end") != RUNNING or not run.get("steps"):
        return tuple(gr.skip() for _ in range(10))
    # A copy of the steps: the cancelled run's thread may still append to its own list until it
    # reaches its next yield, and those tokens must not leak into the stopped run.
    steps = list(run["steps"])
    run = {**run, "steps": steps, "end": f"stopped by you after {len(steps)} tokens"}
    return all_outputs(run, get_bundle(run["model"]).tokenizer, 0)


def clicked_step(run, evt: gr.EventData):
    """A click on a token in the output selects its step on the slider."""
    step = getattr(evt, "_data", None) or {}
    if not run or not run.get("steps") or not isinstance(step, dict) or "step" not in step:
        return gr.skip()
    try:
        i = int(step["step"])
    except (TypeError, ValueError):
        return gr.skip()
    return gr.update(value=min(max(i, 0), len(run["steps"]) - 1) + 1)


INSPECT_MAX_TOKENS = 256   # the Attention tab's display cap


def inspect_step(run, step, tab: str):
    """The context the model saw when it chose the selected step's token, for the Attention or
    Architecture tab: (tab switch, prompt text, position of its last token, the chosen token)."""
    if not run or not run.get("steps"):
        raise gr.Error("Generate some text first, then choose a step to inspect.")
    bundle = get_bundle(run["model"])
    i = min(max(check_int(step, "Step", 1, 10**9), 1), len(run["steps"])) - 1
    ids = run["prompt_ids"] + [r["token_id"] for r in run["steps"][:i]]
    if len(ids) > INSPECT_MAX_TOKENS:
        gr.Info(f"Step {i + 1} saw {len(ids):,} tokens; the inspected prompt keeps the last {INSPECT_MAX_TOKENS}.")
        ids = ids[-INSPECT_MAX_TOKENS:]
    tok = bundle.tokenizer
    text = tok.decode(ids)
    position = max(0, min(len(tok.encode(text)), INSPECT_MAX_TOKENS) - 1)
    chosen = run["steps"][i]["token_id"]
    piece = tok.decode([chosen])
    target = piece if list(tok.encode(piece)) == [chosen] else ""  # a partial UTF-8 byte cannot be typed
    return gr.Tabs(selected=tab), text, position, target


def inspect_in_attention(run, step):
    return inspect_step(run, step, "attention")


def inspect_in_architecture(run, step):
    return inspect_step(run, step, "architecture")[:3]


def apply_preset(name):
    if name not in SAMPLING_PRESETS:
        return gr.skip(), gr.skip(), gr.skip()
    return SAMPLING_PRESETS[name]


@friendly_errors
def temperature_plot(source, temperatures, run, step):
    """The book's figure: one next-token distribution at several temperatures."""
    temps = parse_temperatures(temperatures)
    if source == TEMP_SOURCE_STEP:
        if not run or not run.get("steps"):
            raise gr.Error("Generate some text first (or choose the book's example): this view needs a run's step.")
        i = min(max(check_int(step, "Step", 1, 10**9), 1), len(run["steps"])) - 1
        bundle = get_bundle(run["model"])
        ids = run["prompt_ids"] + [r["token_id"] for r in run["steps"][:i]]
        vocab = min(bundle.config.vocab_size, bundle.tokenizer.n_vocab)
        logits = next_token_logits(bundle.model, ids)[:vocab]
        top = torch.topk(logits, N_CANDIDATES).indices
        labels = [token_label(bundle.tokenizer, int(t)) for t in top]
        where = f"step {i + 1} of your run ({run['model']}), top {N_CANDIDATES} of {vocab:,} tokens"
    else:
        logits = torch.tensor(BOOK_TOY_LOGITS)
        top = torch.arange(len(BOOK_TOY_VOCAB))
        labels = list(BOOK_TOY_VOCAB)
        where = "the book's 9-word vocabulary"
    fig = go.Figure()
    rows = []
    x = np.arange(len(labels))   # positions, labelled: two tokens that display alike keep their own bars
    shown = [plot_text(lab) for lab in labels]
    for t in temps:
        probs = softmax_with_temperature(logits, t)[top]
        fig.add_bar(x=x, y=probs.numpy().astype(np.float32), name=f"T = {t:g}", customdata=shown,
                    hovertemplate="%{customdata}: %{y:.2%}<extra>T = " + f"{t:g}</extra>")
        rows.append(f"| {t:g} | {md_code(labels[int(probs.argmax())])} {_pct(float(probs.max()))} | "
                    f"{_pct(float(probs.sum()))} |")
    fig.update_layout(height=360, barmode="group", margin=dict(l=10, r=10, t=40, b=40),
                      yaxis=dict(title="probability", tickformat=".0%"),
                      xaxis=dict(tickvals=list(x), ticktext=shown),
                      title=dict(text=f"softmax(logits / T) on {where}", font_size=14),
                      legend=dict(orientation="h", y=-0.18))
    note = ("| T | most likely | mass of the tokens shown |\n|---|---|---|\n" + "\n".join(rows)
            + "\n\nLow T piles the probability on the top token (greedy in the limit); high T spreads it "
              "toward uniform, so unlikely tokens get picked more often.")
    return fig, note


def parse_temperatures(text) -> list[float]:
    parts = [p for p in str(text or "").replace(";", ",").split(",") if p.strip()]
    if not parts:
        raise gr.Error("List one or more temperatures separated by commas, e.g. 0.1, 1, 5.")
    if len(parts) > MAX_TEMPERATURES_PLOTTED:
        raise gr.Error(f"Plot at most {MAX_TEMPERATURES_PLOTTED} temperatures at once (got {len(parts)}).")
    temps = []
    for p in parts:
        try:
            t = float(p)
        except ValueError:
            raise gr.Error(f"{p.strip()!r} is not a number: list temperatures like 0.1, 1, 5.") from None
        if not (0 < t <= 100) or math.isnan(t):
            raise gr.Error(f"Temperature {p.strip()} is out of range: use values above 0 and at most 100.")
        temps.append(t)
    return temps


@friendly_errors
def compare(prompt, temperature, top_k, top_p, temperature_b, top_k_b, top_p_b, max_new_tokens, seed,
            stop_at_eot, use_cache, model_name, precision="fp32"):
    """Two settings on the same prompt and seed, streamed side by side."""
    bundle = decoding_bundle(model_name, precision)
    a, notes_a = read_settings(temperature, top_k, top_p, max_new_tokens, stop_at_eot, use_cache, bundle, "A: ")
    b, notes_b = read_settings(temperature_b, top_k_b, top_p_b, max_new_tokens, stop_at_eot, use_cache, bundle, "B: ")
    seed = read_seed(seed)
    ids, text, dropped, from_eot, prompt_notes = read_prompt(prompt, bundle)
    _warn(prompt_notes + notes_a + [n for n in notes_b if n not in notes_a])
    runs = [new_run(bundle, ids, text, dropped, from_eot, s, seed, []) for s in (a, b)]
    streams = [drive(r, bundle, ids, s, seed) for r, s in zip(runs, (a, b))]
    done = [False, False]
    last = 0.0
    while not all(done):
        for k in (0, 1):  # lock-step: one token for A, one for B
            if done[k]:
                continue
            try:
                _, final = next(streams[k])
                done[k] = final
            except StopIteration:
                done[k] = True
        if time.perf_counter() - last >= YIELD_EVERY_S or all(done):
            last = time.perf_counter()
            yield (render_html(runs[0], bundle.tokenizer), render_html(runs[1], bundle.tokenizer),
                   compare_table(runs))


def compare_table(runs) -> str:
    rows = [("strategy", lambda r, s: r["settings"]["strategy"]),
            ("tokens", lambda r, s: f"{s.tokens}"),
            ("average model probability of the picks", lambda r, s: _pct(s.mean_prob)),
            ("surprisal (bits/token)", lambda r, s: f"{s.surprisal_bits:.2f}"),
            ("mean entropy (bits)", lambda r, s: f"{s.mean_entropy_bits:.2f}"),
            ("distinct tokens", lambda r, s: f"{100 * s.distinct:.0f} %"),
            ("how it ended", lambda r, s: r["end"])]
    sums = [summarize_steps([as_step(x) for x in r["steps"]]) for r in runs]
    lines = ["| | A | B |", "|---|---|---|"]
    for name, fn in rows:
        lines.append(f"| {name} | " + " | ".join(md_text(str(fn(r, s))) for r, s in zip(runs, sums)) + " |")
    return (f"Same prompt, same seed ({runs[0]['seed']}).\n\n" + "\n".join(lines)
            + "\n\nLow surprisal and few distinct tokens mean safe, repetitive text; high surprisal means "
              "more unusual picks.")


@friendly_errors
def measure_cache(prompt, max_new_tokens, model_name, precision="fp32"):
    """Greedy generation timed with the KV cache on and off, on the spot."""
    bundle = decoding_bundle(model_name, precision)
    ids, _, _, _, notices = read_prompt(prompt, bundle)
    n = check_int(max_new_tokens, "Max new tokens", 1, 10**9)
    if n > SPEED_MAX_TOKENS:
        notices.append(f"Timing {SPEED_MAX_TOKENS} new tokens (the cap for this measurement).")
        n = SPEED_MAX_TOKENS
    _warn(notices)
    on = measure_speed(bundle.model, ids, n, use_cache=True, time_limit_s=SPEED_TIME_LIMIT_S)
    off = measure_speed(bundle.model, ids, n, use_cache=False, time_limit_s=SPEED_TIME_LIMIT_S)
    same = on.tokens[:off.new_tokens] == off.tokens[:on.new_tokens]
    ctx = bundle.config.context_length
    rows = [("KV cache on", on), ("KV cache off", off)]
    lines = ["| | new tokens | tokens/s | first token | positions through the model |", "|---|---|---|---|---|"]
    for name, r in rows:
        lines.append(f"| {name} | {r.new_tokens} | {r.tokens_per_s:.1f} | {1000 * r.first_token_s:.0f} ms | "
                     f"{r.positions:,} |")
    speedup = on.tokens_per_s / off.tokens_per_s if off.tokens_per_s > 0 else float("nan")
    window = ("" if len(ids) + n <= ctx else
              f" Past {ctx} tokens the window slides: positions shift, so every step recomputes the whole "
              "window with or without the cache.")
    return ("\n".join(lines)
            + f"\n\n**The cache made generation {speedup:.1f}× faster** on {bundle.name} "
              f"({getattr(bundle.model, 'precision', 'fp32')} weights, {len(ids)}-token prompt, "
              f"greedy). Without it every new token reruns the whole sequence; with it only the new position "
              f"is computed and the keys/values of earlier positions are reused. "
            + ("Both produced the same tokens. ✓" if same else "⚠ The two runs produced different tokens.")
            + window + " Timings are from this server right now, shared with other users.")


# ---------------------------------------------------------------- the tab

def build(ctx) -> None:
    with gr.Tab("7 · Generate", id="generate", elem_id="tab-generate"):
        gr.Markdown(INTRO)
        run_state = gr.State(None)
        with gr.Row():
            with gr.Column(scale=3):
                prompt = gr.Textbox(label="Prompt", lines=3, max_lines=10, max_length=MAX_PROMPT_CHARS,
                                    value=EXAMPLES[1][0], elem_id="gen-prompt",
                                    placeholder="Start of a text; empty = start from <|endoftext|>",
                                    info="Tokenized with the active model's tokenizer; longer than the context "
                                         "→ only the last tokens are used. <|endoftext|> is the special token.")
                with gr.Row():
                    max_new = gr.Slider(1, MAX_NEW_TOKENS, value=60, step=1, label="Max new tokens",
                                        elem_id="gen-max-new", info=f"How many tokens to add (this server's cap: {MAX_NEW_TOKENS}).")
                    seed = gr.Number(123, precision=0, label="Seed", elem_id="gen-seed", minimum=0, maximum=MAX_SEED,
                                     info="Same seed + same settings → same text. Empty = a fresh random seed.")
                with gr.Row():
                    stop_eot = gr.Checkbox(True, label="Stop at <|endoftext|>", elem_id="gen-stop-eot",
                                           info="End when the model picks the end-of-text token (the book's eos_id).")
                    use_cache = gr.Checkbox(True, label="KV cache", elem_id="gen-cache",
                                            info="Reuse earlier keys/values so each step computes one position. "
                                                 "Off: recompute the whole sequence each step (same tokens, slower).")
                    precision = gr.Radio(list(PRECISIONS), value="fp32", label="Precision", elem_id="gen-precision",
                                         info="Weights of every linear layer and the output head: fp32, or int8 "
                                              "(one byte each, a scale per output channel; CPU). Decoding reads "
                                              "every weight per token, so int8 is several times faster on GPT-2; "
                                              "on the tiny shipped model the per-layer overhead makes it slower. "
                                              "Perplexity moves < 1 %.")
                with gr.Row():
                    gen_btn = gr.Button("Generate", variant="primary", elem_id="gen-run")
                    stop_btn = gr.Button("Stop", variant="stop", elem_id="gen-stop")
            with gr.Column(scale=2):
                preset = gr.Radio(list(SAMPLING_PRESETS), value=DEFAULT_SAMPLING_PRESET, label="Strategy preset", elem_id="gen-preset",
                                  info="Sets the three knobs below; change them freely to combine strategies.")
                t0, k0, p0 = SAMPLING_PRESETS[DEFAULT_SAMPLING_PRESET]
                temperature = gr.Slider(0.0, 3.0, value=t0, step=0.05, label="Temperature", elem_id="gen-temperature",
                                        info="Logits ÷ T before softmax. 0 = greedy (argmax); <1 sharper, >1 flatter.")
                top_k = gr.Slider(0, 200, value=k0, step=1, label="Top-k", elem_id="gen-top-k",
                                  info="Keep only the k most likely tokens (0 = off). The book uses 25 with T 1.4.")
                top_p = gr.Slider(0.01, 1.0, value=p0, step=0.01, label="Top-p (nucleus)", elem_id="gen-top-p",
                                  info="Keep the smallest set of top tokens whose probability reaches p (1 = off); "
                                       "measured after temperature.")
        gr.Examples(EXAMPLES, [prompt, temperature, top_k, top_p, max_new, seed], label="Try these",
                    example_labels=["Book: greedy", "Top-k + top-p", "Book: top-k 25, T 1.4", "Top-p 0.9",
                                    "Empty prompt"])
        out_html = gr.HTML(render_html(None, None), label="Generated text", elem_id="gen-output-html",
                           js_on_load=CLICK_JS)
        stats = gr.Markdown(label="Statistics", elem_id="gen-stats")
        with gr.Accordion("Plain text", open=False):
            out_text = gr.Textbox(label="Prompt + generated text", lines=4, buttons=["copy"], elem_id="gen-output",
                                  interactive=False)
        gr.Markdown("### Every step: what the model chose from")
        with gr.Row():
            with gr.Column(scale=3):
                step = gr.Slider(1, 2, value=1, step=1, label="Step", elem_id="gen-step", interactive=False,
                                 info="Which generated token to inspect (or click a token above).")
                step_md = gr.Markdown(label="Selected step", elem_id="gen-step-detail")
                step_plot = gr.Plot(step_figure(None, None), label="Top candidates before and after filtering",
                                    elem_id="gen-step-chart")
            with gr.Column(scale=2):
                entropy_plot = gr.Plot(entropy_figure(None, None), label="Entropy per step", elem_id="gen-entropy")
                with gr.Group():
                    alt = gr.Radio([], label="Branch: force another token at this step", elem_id="gen-branch-choice",
                                   info="Replace the selected step's pick by one of its candidates and continue "
                                        "from there (same total length, current knobs and seed).")
                    branch_btn = gr.Button("Continue from this alternative", elem_id="gen-branch")
                with gr.Row():
                    inspect_att = gr.Button("Inspect this step in Attention", size="sm",
                                            elem_id="gen-inspect-attention")
                    inspect_arch = gr.Button("… in Architecture", size="sm", elem_id="gen-inspect-architecture")
                gr.Markdown("Opens the tab on the text the model saw when it chose this token, with its last "
                            "position selected (where the choice was made) and the chosen token to explain.",
                            elem_id="gen-inspect-note")
        with gr.Accordion("Per-step candidates as JSON (what the API returns)", open=False):
            steps_js = gr.JSON(label="Per-step candidates", elem_id="gen-steps-json")

        with gr.Accordion("Temperature: the book's plot", open=False, elem_id="gen-temp-acc"):
            with gr.Row():
                temp_source = gr.Radio([TEMP_SOURCE_BOOK, TEMP_SOURCE_STEP], value=TEMP_SOURCE_BOOK,
                                       label="Distribution", elem_id="gen-temp-source",
                                       info="The book's toy logits, or the real logits at the selected step.")
                temps = gr.Textbox("0.1, 1, 5", label="Temperatures", elem_id="gen-temps",
                                   info=f"Comma-separated, each above 0 (up to {MAX_TEMPERATURES_PLOTTED}).")
                temp_btn = gr.Button("Plot", elem_id="gen-temp-run")
            init_fig, init_note = temperature_plot(TEMP_SOURCE_BOOK, "0.1, 1, 5", None, 1)
            temp_plot = gr.Plot(init_fig, label="Probabilities at each temperature", elem_id="gen-temp-plot")
            temp_note = gr.Markdown(init_note, label="Summary", elem_id="gen-temp-note")

        with gr.Accordion("Compare two settings side by side", open=False, elem_id="gen-compare-acc"):
            gr.Markdown("**A** uses the knobs above; **B** uses these. Same prompt, seed and length.")
            with gr.Row():
                temperature_b = gr.Slider(0.0, 3.0, value=0.0, step=0.05, label="B: temperature",
                                          elem_id="gen-b-temperature", info="0 = greedy.")
                top_k_b = gr.Slider(0, 200, value=0, step=1, label="B: top-k", elem_id="gen-b-top-k",
                                    info="0 = off.")
                top_p_b = gr.Slider(0.01, 1.0, value=1.0, step=0.01, label="B: top-p", elem_id="gen-b-top-p",
                                    info="1 = off.")
                cmp_btn = gr.Button("Compare A and B", elem_id="gen-compare")
            with gr.Row():
                cmp_a = gr.HTML(label="A", elem_id="gen-compare-a")
                cmp_b = gr.HTML(label="B", elem_id="gen-compare-b")
            cmp_md = gr.Markdown(label="Comparison", elem_id="gen-compare-table")

        with gr.Accordion("Speed: what the KV cache saves, measured now", open=False, elem_id="gen-speed-acc"):
            gr.Markdown("Times greedy generation of *max new tokens* (up to "
                        f"{SPEED_MAX_TOKENS}) after the prompt above, once with the cache and once without.")
            speed_btn = gr.Button("Measure", elem_id="gen-speed")
            speed_md = gr.Markdown(label="KV cache timing", elem_id="gen-speed-result")

        knobs = [temperature, top_k, top_p, max_new, seed, stop_eot, use_cache]
        outs = [out_html, out_text, stats, steps_js, step, step_md, step_plot, entropy_plot, alt, run_state]
        preset.input(apply_preset, preset, [temperature, top_k, top_p], api_visibility="private", queue=False)
        gen_event = gr.on([gen_btn.click, prompt.submit], generate_text,
                          [prompt, *knobs, ctx.model_name, precision], outs,
                          api_name="generate", concurrency_id=CPU_HEAVY, show_progress_on=[stats])
        branch_event = branch_btn.click(branch, [run_state, step, alt, *knobs, ctx.model_name, precision], outs,
                                        api_visibility="private", concurrency_id=CPU_HEAVY,  # needs the run state
                                        show_progress_on=[stats])
        step.change(select_step, [run_state, step], [out_html, step_md, step_plot, entropy_plot, alt],
                    api_visibility="private", queue=False)
        out_html.click(clicked_step, [run_state], [step], api_visibility="private", queue=False)
        temp_btn.click(temperature_plot, [temp_source, temps, run_state, step], [temp_plot, temp_note],
                       api_name="temperature_plot", concurrency_id=CPU_HEAVY)
        temp_source.change(temperature_plot, [temp_source, temps, run_state, step], [temp_plot, temp_note],
                           api_visibility="private", concurrency_id=CPU_HEAVY)
        cmp_event = cmp_btn.click(compare, [prompt, temperature, top_k, top_p, temperature_b, top_k_b, top_p_b,
                                            max_new, seed, stop_eot, use_cache, ctx.model_name, precision],
                                  [cmp_a, cmp_b, cmp_md], api_name="generate_compare", concurrency_id=CPU_HEAVY,
                                  show_progress_on=[cmp_md])
        speed_btn.click(measure_cache, [prompt, max_new, ctx.model_name, precision], speed_md, api_name="generate_speed",
                        concurrency_id=CPU_HEAVY, show_progress_on=[speed_md])
        # Queued behind the cancelled run (same concurrency id), so it sees its last state.
        stop_btn.click(None, None, None, cancels=[gen_event, branch_event, cmp_event]).then(
            stopped, run_state, outs, api_visibility="private", concurrency_id=CPU_HEAVY)
        att, arch = ctx.shared.get("attention"), ctx.shared.get("architecture")
        if att is not None and arch is not None and ctx.tabs is not None:
            inspect_att.click(inspect_in_attention, [run_state, step],
                              [ctx.tabs, att["prompt"], att["focus"], att["target"]],
                              api_visibility="private", queue=False).success(
                lambda text: text, att["prompt"], arch["prompt"], api_visibility="private", queue=False).then(
                att["run"], att["inputs"], att["outputs"], api_visibility="private", concurrency_id=CPU_HEAVY)
            inspect_arch.click(inspect_in_architecture, [run_state, step],
                               [ctx.tabs, arch["prompt"], arch["position"]],
                               api_visibility="private", queue=False).success(
                lambda text: text, arch["prompt"], att["prompt"], api_visibility="private", queue=False).then(
                arch["run"], arch["inputs"], arch["outputs"], api_visibility="private", concurrency_id=CPU_HEAVY)
        # Another model makes the last run's ids meaningless: forget it.
        ctx.model_changed.change(reset_outputs, ctx.model_changed, outs, api_visibility="private", queue=False)


def reset_outputs(_model_name=None):
    return (render_html(None, None), "", "", {}, _slider(None, 0), "", step_figure(None, None),
            entropy_figure(None, None), gr.update(choices=[], value=None), None)
