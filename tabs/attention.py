"""Stage 4 · Attention: where each token looks, per layer and head, and the maths behind it.

Every picture is drawn from one traced forward pass (``llm_core.views.attention_view``); the
step-by-step maths reads the same trace and the module's own weights.
"""
from __future__ import annotations

import math

import gradio as gr
import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from llm_core.views import attention_view as attn_view
from llm_core import interventions as iv
from llm_core.views.token_text import token_label
from llm_core.examples import pick_example
from tabs.common import (CPU_HEAVY, check_int, check_text, friendly_errors, get_bundle, link_int, link_params,
                         share_link_js, share_link_row)
from tabs.figures import note_figure, token_ticks
from tabs.lazy import on_first_open
from tabs.markup import html_text, md_code, md_text, plot_text

MAX_PROMPT_CHARS = 20_000       # far more than 256 tokens; longer text is refused, not encoded
GRID_MAX_CELLS = 512 * 512      # all heads of a layer in one figure: cells in total
HEAD_VIEW_MAX_KEYS = 40         # tokens listed in the head view (those just before the chosen one)
LABEL_ALL_TICKS = 40            # above this many tokens the axes show every n-th label
MAX_SEED = 2**32 - 1
STATISTICS = list(attn_view.HEAD_STATISTICS)
LATEX = [{"left": "$$", "right": "$$", "display": True}, {"left": "$", "right": "$", "display": False}]

DEFAULT_PROMPT = "The cat sat on the mat because it was tired. The cat sat on the mat"
# First-load prompts; the one whose words the active tokenizer keeps whole is shown.
DEFAULT_PROMPTS = [DEFAULT_PROMPT, "The list is a list of values. The list is a list of"]
EXAMPLES = [
    [DEFAULT_PROMPT, 0, 0],
    ["one two three four five one two three four five one two three four five", 1, 0],
    ["def add(a, b):\n    return a + b\n\nprint(add(2, 3))", 0, 1],
    ["Your journey starts with one step", 1, 1],
    ["First document.<|endoftext|>A second document starts here.", 0, 0],
]

INTRO = """\
Each token builds its next representation as a **weighted average of the tokens before it**;
the weights are the attention. A GPT has several **heads** per layer, each with its own
weights, so each can look for something different. Rows are the token that looks (the
query), columns the tokens it looks at (the keys). The empty upper triangle is the
**causal mask**: no token may look ahead.
"""


# ---------------------------------------------------------------- small helpers

def _causal(weights: np.ndarray) -> np.ndarray:
    """Blank out the masked upper triangle so the causal shape is visible (not just dark)."""
    z = weights.astype(np.float32).copy()
    t = z.shape[-1]
    z[..., np.triu_indices(t, 1)[0], np.triu_indices(t, 1)[1]] = np.nan
    return z


def _colour_top(weights: np.ndarray) -> float:
    """Shared upper end of a colour scale: the 99th percentile of the weights tokens may use
    (row 0 is always 1 and would wash every other cell out)."""
    w = np.asarray(weights, dtype=np.float32)
    t = w.shape[-1]
    if t < 2:
        return 1.0
    rows, cols = np.tril_indices(t)
    keep = rows > 0
    vals = w[..., rows[keep], cols[keep]]
    return float(min(1.0, max(1e-3, np.quantile(vals, 0.99))))


def _heatmap(weights: np.ndarray, labels: list[str], title: str, zmax: float, height: int = 520) -> go.Figure:
    t = len(labels)
    hover = [f"{plot_text(lab)} ·{i}" for i, lab in enumerate(labels)]
    fig = go.Figure(go.Heatmap(
        z=_causal(weights), x=np.arange(t), y=np.arange(t), zmin=0.0, zmax=zmax, colorscale="Viridis",
        customdata=np.array([[[hover[r], hover[c]] for c in range(t)] for r in range(t)]) if t <= 64 else None,
        hovertemplate=("query %{customdata[0]}<br>key %{customdata[1]}<br>weight %{z:.4f}<extra></extra>"
                       if t <= 64 else "query ·%{y}<br>key ·%{x}<br>weight %{z:.4f}<extra></extra>"),
        colorbar=dict(title="weight"),
    ))
    ticks, texts = token_ticks(labels, LABEL_ALL_TICKS, index=True)
    fig.update_layout(title=title, height=height, margin=dict(l=10, r=10, t=50, b=10),
                      xaxis=dict(tickvals=ticks, ticktext=texts, tickangle=-60, title="key (looked at)",
                                 side="top"),
                      yaxis=dict(tickvals=ticks, ticktext=texts, autorange="reversed", title="query (looking)"),
                      plot_bgcolor="#f1f1f4")
    return fig


def _layer_grid(view: attn_view.AttentionView) -> go.Figure:
    """All heads of one layer, one colour scale, pooled when the figure would be too heavy."""
    maps, stride, layer, chosen_head = view.layer_maps, view.layer_stride, view.layer, view.head
    n_heads, side = maps.shape[0], maps.shape[-1]
    cols = min(n_heads, 4 if n_heads <= 8 else 6)
    rows = math.ceil(n_heads / cols)
    titles = [f"<b>head {h}</b>" if h == chosen_head else f"head {h}" for h in range(n_heads)]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.02,
                        vertical_spacing=0.06 if rows > 1 else 0.1)
    zmax = _colour_top(view.layer_weights)
    pos = np.arange(side) * stride
    for h in range(n_heads):
        fig.add_trace(go.Heatmap(z=_causal(maps[h]), x=pos, y=pos, coloraxis="coloraxis",
                                 hovertemplate=f"head {h}<br>query ·%{{y}}<br>key ·%{{x}}"
                                               "<br>weight %{z:.4f}<extra></extra>"),
                      row=h // cols + 1, col=h % cols + 1)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False, autorange="reversed")
    note = f" (each cell averages {stride}×{stride} tokens)" if stride > 1 else ""
    fig.update_layout(title=f"Layer {layer}: every head, one colour scale{note}",
                      height=min(1400, 60 + rows * (1100 // cols)), margin=dict(l=10, r=10, t=70, b=10),
                      coloraxis=dict(colorscale="Viridis", cmin=0.0, cmax=zmax, colorbar=dict(title="weight")),
                      plot_bgcolor="#f1f1f4")
    return fig


def _head_view(view: attn_view.AttentionView) -> go.Figure:
    """Lines from the chosen token to each token it attends to; line width = weight."""
    weights, labels, focus, layer, head = view.head_map, view.tokens.labels, view.focus, view.layer, view.head
    start, hidden = view.focus_start, view.focus_hidden
    keys = list(range(start, focus + 1))
    y = {j: -(j - start) for j in keys}
    fig = go.Figure()
    for j in keys:
        w = float(weights[focus, j])
        fig.add_trace(go.Scatter(
            x=[0, 1], y=[y[focus], y[j]], mode="lines", hoverinfo="text",
            line=dict(width=max(0.4, 24 * w), color=f"rgba(60, 90, 200, {0.25 + 0.75 * min(1.0, w * 2):.3f})"),
            text=f"{plot_text(labels[focus])} → {plot_text(labels[j])}: {w:.4f}", showlegend=False))
    left = [f"<b>{plot_text(labels[j])}</b>" if j == focus else plot_text(labels[j]) for j in keys]
    right = [f"{plot_text(labels[j])}  {float(weights[focus, j]):.3f}" for j in keys]
    fig.add_trace(go.Scatter(x=[0] * len(keys), y=[y[j] for j in keys], mode="text", text=left,
                             textposition="middle left", hoverinfo="skip", showlegend=False))
    fig.add_trace(go.Scatter(x=[1] * len(keys), y=[y[j] for j in keys], mode="text", text=right,
                             textposition="middle right", hoverinfo="skip", showlegend=False))
    note = (f"<br><sup>{start} earlier tokens not listed; together they get weight {hidden:.3f}</sup>"
            if start else "")
    fig.update_layout(
        title=f"Layer {layer}, head {head}: where “{plot_text(labels[focus])}” (·{focus}) looks{note}",
        height=max(260, 110 + 24 * len(keys)), margin=dict(l=10, r=10, t=70, b=10),
        xaxis=dict(visible=False, range=[-0.8, 1.8]), yaxis=dict(visible=False), plot_bgcolor="white")
    return fig


def _summary_grid(view: attn_view.AttentionView) -> go.Figure:
    stats, statistic = view.statistics, view.statistic
    z = stats[statistic].astype(np.float32)
    n_layers, n_heads = z.shape
    extra = np.stack([stats[name] for name in STATISTICS], axis=-1).astype(np.float32)
    hover = "layer %{y}, head %{x}<br>" + "<br>".join(
        f"{name}: %{{customdata[{i}]:.3f}}" for i, name in enumerate(STATISTICS)) + "<extra></extra>"
    fig = go.Figure(go.Heatmap(
        z=z, x=np.arange(n_heads), y=np.arange(n_layers), zmin=0.0, zmax=1.0, colorscale="Magma",
        customdata=extra, hovertemplate=hover, colorbar=dict(title=statistic),
        texttemplate="%{z:.2f}" if z.size <= 300 else None, textfont=dict(size=10),
    ))
    fig.update_layout(title=f"Every head by “{statistic}” (rows: layers, columns: heads)",
                      height=min(900, 140 + 34 * n_layers), margin=dict(l=10, r=10, t=50, b=10),
                      xaxis=dict(title="head", dtick=1), yaxis=dict(title="layer", dtick=1, autorange="reversed"))
    return fig


def _summary_text(view: attn_view.AttentionView) -> str:
    statistic = view.statistic
    which = "lowest" if statistic == "entropy" else "highest"
    heads = ", ".join(f"layer {lay} head {h} ({v:.2f})" for lay, h, v in view.strongest)
    return f"**{statistic}:** {attn_view.HEAD_STATISTICS[statistic]}  \n{which.capitalize()}: {heads}."


# ---------------------------------------------------------------- the maths, step by step

def _fmt(x: float) -> str:
    return "−∞" if x == float("-inf") else f"{x:.4f}"


def _matrix_panel(fig, z: torch.Tensor, row: int, col: int, axis: str, labels: list[str]):
    arr = z.numpy().astype(np.float32)
    finite = np.isfinite(arr)
    text = np.where(finite, np.vectorize(lambda v: f"{v:.2f}")(np.where(finite, arr, 0)), "−∞")
    # Positions on the axes, tokens as tick labels: a categorical axis would merge repeated tokens.
    pos = np.arange(len(labels))
    names = [f"{plot_text(lab)} ·{i}" for i, lab in enumerate(labels)]
    fig.add_trace(go.Heatmap(z=np.where(finite, arr, np.nan).astype(np.float32), x=pos, y=pos,
                             text=text, texttemplate="%{text}", textfont=dict(size=9), coloraxis=axis,
                             customdata=np.array([[[names[r], names[c]] for c in pos] for r in pos]),
                             hovertemplate="query %{customdata[0]}<br>key %{customdata[1]}<br>%{text}<extra></extra>"),
                  row=row, col=col)
    ticks = dict(tickvals=list(pos), ticktext=[plot_text(lab) for lab in labels])
    fig.update_xaxes(**ticks, row=row, col=col)
    fig.update_yaxes(**ticks, row=row, col=col)


def _math_scores_figure(s: attn_view.AttentionSteps) -> go.Figure:
    dk = s.head_dim
    titles = ["1 · Q·Kᵀ", f"2 · ÷ √d_k = ÷ {math.sqrt(dk):.3f}", "3 · causal mask (−∞ above diagonal)",
              "4 · softmax (rows sum to 1)", f"5 · dropout p = {s.dropout_p} (illustration)",
              f"6 · context Z = A·V (first {min(8, dk)} of {dk} dims)"]
    fig = make_subplots(rows=2, cols=3, subplot_titles=titles, horizontal_spacing=0.09, vertical_spacing=0.16)
    for i, (z, axis) in enumerate(((s.raw_scores, "coloraxis"), (s.scaled, "coloraxis"), (s.masked, "coloraxis"),
                                   (s.weights, "coloraxis2"), (s.dropped, "coloraxis2"))):
        _matrix_panel(fig, z, i // 3 + 1, i % 3 + 1, axis, s.labels)
    ctx = s.context[:, :8].numpy().astype(np.float32)
    pos = np.arange(len(s.labels))
    fig.add_trace(go.Heatmap(z=ctx, x=[f"z{j}" for j in range(ctx.shape[1])], y=pos,
                             customdata=np.array([[f"{plot_text(lab)} ·{i}"] * ctx.shape[1] for i, lab in enumerate(s.labels)]),
                             texttemplate="%{z:.2f}", textfont=dict(size=9), coloraxis="coloraxis3",
                             hovertemplate="token %{customdata}<br>%{x} = %{z:.4f}<extra></extra>"), row=2, col=3)
    fig.update_yaxes(tickvals=list(pos), ticktext=[plot_text(lab) for lab in s.labels], row=2, col=3)
    lim = max(1e-6, float(s.raw_scores.abs().max()), float(s.scaled.abs().max()))  # panels 1-3 share it
    clim = max(1e-6, float(s.context.abs().max()))
    top = max(1e-6, float(s.dropped.max()))
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(tickangle=-45)
    fig.update_layout(
        height=760, margin=dict(l=10, r=10, t=60, b=10), plot_bgcolor="#f1f1f4",
        title=f"Layer {s.layer}, head {s.head}, first {len(s.labels)} tokens",
        coloraxis=dict(colorscale="RdBu", cmin=-lim, cmax=lim, colorbar=dict(title="score", x=1.0, y=0.8, len=0.4)),
        coloraxis2=dict(colorscale="Viridis", cmin=0, cmax=top, colorbar=dict(title="weight", x=1.0, y=0.25, len=0.4)),
        coloraxis3=dict(colorscale="RdBu", cmin=-clim, cmax=clim, showscale=False),
    )
    return fig


def _math_qkv_figure(s: attn_view.AttentionSteps) -> go.Figure:
    fig = make_subplots(rows=1, cols=3, subplot_titles=[f"Q = X·W_q  [{len(s.labels)} × {s.head_dim}]",
                                                        f"K = X·W_k  [{len(s.labels)} × {s.head_dim}]",
                                                        f"V = X·W_v  [{len(s.labels)} × {s.head_dim}]"],
                        shared_yaxes=True, horizontal_spacing=0.03)
    lim = max(1e-6, float(torch.stack([s.q, s.k, s.v]).abs().max()))
    pos = np.arange(len(s.labels))
    names = np.array([[f"{plot_text(lab)} ·{i}"] * s.head_dim for i, lab in enumerate(s.labels)])
    for i, (name, z) in enumerate((("q", s.q), ("k", s.k), ("v", s.v))):
        fig.add_trace(go.Heatmap(z=z.numpy().astype(np.float32), y=pos, customdata=names,
                                 coloraxis="coloraxis",
                                 hovertemplate=f"token %{{customdata}}<br>{name}[%{{x}}] = %{{z:.4f}}<extra></extra>"),
                      row=1, col=i + 1)
    fig.update_yaxes(autorange="reversed", tickvals=list(pos), ticktext=[plot_text(lab) for lab in s.labels])
    fig.update_layout(height=300, margin=dict(l=10, r=10, t=50, b=10),
                      coloraxis=dict(colorscale="RdBu", cmin=-lim, cmax=lim))
    return fig


def _math_markdown(s: attn_view.AttentionSteps, d_model: int, qkv_bias: bool) -> str:
    t, dk = len(s.labels), s.head_dim
    i = t - 1  # the last token shown: the one with the most keys to look at
    bias = " + b" if qkv_bias else ""
    lines = [
        f"### Layer {s.layer}, head {s.head}: the maths with this model's numbers",
        "Tokens: " + " · ".join(f"`{j}` {md_text(lab)}" for j, lab in enumerate(s.labels)),
        "",
        f"**1. Queries, keys, values.** The block's LayerNorm output $X$ ({t} × {d_model}) times this head's "
        f"slice of the projection matrices: $Q = XW_q{bias}$, $K = XW_k{bias}$, $V = XW_v{bias}$, each "
        f"{t} × $d_k$ = {t} × {dk}. Recomputed from the weights they match the model's own q, k, v "
        f"(largest difference {s.check_qkv:.1e}).",
        "",
        "**2. Scores.** $\\omega = QK^\\top$: how well each query matches each key (a dot product).",
        "",
        f"**3. Scale.** $\\omega / \\sqrt{{d_k}} = \\omega / \\sqrt{{{dk}}} = \\omega / {math.sqrt(dk):.4f}$, "
        "so the softmax does not saturate as $d_k$ grows.",
        "",
        "**4. Causal mask.** Entries above the diagonal (keys after the query) become $-\\infty$.",
        "",
        "**5. Softmax.** $\\alpha_{ij} = e^{\\omega_{ij}/\\sqrt{d_k}} / \\sum_{j'} e^{\\omega_{ij'}/\\sqrt{d_k}}$: "
        "every row sums to 1 and $e^{-\\infty} = 0$. These equal the weights the model recorded "
        f"(largest difference {s.check_weights:.1e}).",
        "",
        f"**6. Dropout (training only).** With p = {s.dropout_p}, about half the weights are zeroed and the "
        f"rest multiplied by 1/(1−p) = {1 / (1 - s.dropout_p):g}. Shown as an illustration: the app runs the "
        "model in evaluation mode, where dropout does nothing.",
        "",
        "**7. Context vectors.** $z_i = \\sum_j \\alpha_{ij} v_j$, i.e. $Z = AV$ "
        f"({t} × {dk}). The heads' contexts, side by side and through `out_proj`, give the layer's "
        f"attention output exactly as the model computed it (largest difference {s.check_output:.1e}).",
        "",
        f"#### Token {i} ({md_text(s.labels[i])}) looking back",
        "",
        "| key j | token | $q_i \\cdot k_j$ | $\\div\\sqrt{d_k}$ | softmax $\\alpha_{ij}$ | after dropout |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for j in range(t):
        lines.append(f"| {j} | {md_text(s.labels[j])} | {_fmt(float(s.raw_scores[i, j]))} | "
                     f"{_fmt(float(s.masked[i, j]))} | {float(s.weights[i, j]):.4f} | {float(s.dropped[i, j]):.4f} |")
    shown = min(4, dk)
    z = ", ".join(f"{float(x):.4f}" for x in s.context[i, :shown])
    lines += ["", f"$z_{{{i}}}$ = [{z}{', …' if dk > shown else ''}] (first {shown} of {dk} numbers)."]
    return "\n".join(lines)


# ---------------------------------------------------------------- the event

def _check_statistic(statistic) -> str:
    if statistic not in attn_view.HEAD_STATISTICS:
        raise gr.Error(f"Unknown statistic {statistic!r}: choose one of {', '.join(STATISTICS)}.")
    return statistic


@friendly_errors
def attention(prompt, layer, head, focus, statistic, math_tokens, dropout_seed, model_name):
    """Trace the prompt once and draw every view of it."""
    text = check_text(prompt, "prompt", max_chars=MAX_PROMPT_CHARS)
    bundle = get_bundle(model_name)
    cfg = bundle.config
    layer = check_int(layer, "Layer", 0, cfg.n_layers - 1)
    head = check_int(head, "Head", 0, cfg.n_heads - 1)
    statistic = _check_statistic(statistic)
    math_tokens = check_int(math_tokens, "Tokens in the maths", 1, attn_view.MATH_MAX_TOKENS)
    seed = check_int(dropout_seed, "Dropout seed", 0, MAX_SEED)
    try:
        with bundle.lock, torch.inference_mode():
            att = attn_view.trace_prompt(bundle.model, bundle.tokenizer, text, cache_name=bundle.name)
            steps = attn_view.attention_steps(bundle.model, att, layer, head, math_tokens,
                                       generator=torch.Generator().manual_seed(seed))
    except attn_view.PromptError as exc:
        raise gr.Error(str(exc)) from None
    tokens = att.tokens
    t = len(tokens.ids)
    focus = check_int(focus, "Token for the head view", -t, t - 1)
    focus = focus % t
    if tokens.truncated:
        gr.Warning(tokens.notice())

    view = attn_view.attention_view(att, layer, head, focus, statistic, GRID_MAX_CELLS, HEAD_VIEW_MAX_KEYS, steps)
    notice = (f"**{t} token{'s' if t != 1 else ''}** through **{bundle.name}** ({cfg.n_layers} layers × {cfg.n_heads} heads, "
              f"d_k = {cfg.head_dim}). " + (f"⚠️ {tokens.notice()}" if tokens.truncated else ""))
    return (
        notice,
        _heatmap(view.head_map, tokens.labels, f"Layer {layer}, head {head}", _colour_top(view.head_map)),
        _layer_grid(view),
        _heatmap(view.mean_map, tokens.labels, f"Layer {layer}: mean over its {cfg.n_heads} heads",
                 _colour_top(view.mean_map)),
        _head_view(view),
        _summary_grid(view),
        _summary_text(view),
        _math_markdown(steps, cfg.emb_dim, cfg.qkv_bias),
        _math_qkv_figure(steps),
        _math_scores_figure(steps),
    )


# ---------------------------------------------------------------- knock out heads, which heads matter

KO_CHOICES = [("knock out these heads", "these"), ("knock out all but these", "all but")]
MODE_CHOICES = [("zero (the head outputs nothing)", "zero"),
                ("mean (its average output over this prompt)", "mean")]
TOP_SHOWN = 10          # tokens in the before/after chart
GRID_JS = ("element.addEventListener('click', (e) => { const c = e.target.closest('[data-layer]'); "
           "if (c) { trigger('click', {layer: parseInt(c.dataset.layer), head: parseInt(c.dataset.head)}); } });")
MAX_HEADS_CHARS = 20_000     # GPT-2 XL's 1,200 heads written out fit easily
MAX_TARGET_CHARS = 200


def parse_heads(text, n_layers: int, n_heads: int) -> list[tuple[int, int]]:
    """'0.1, 2.3' (layer.head) → [(0, 1), (2, 3)], checked against the model."""
    text = check_text(text, "list of heads", max_chars=MAX_HEADS_CHARS, allow_empty=True)
    heads, seen = [], set()
    for part in (text or "").replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            layer_s, head_s = part.split(".")
            layer, head = int(layer_s), int(head_s)
        except ValueError:
            raise gr.Error(f"{part!r} is not a head: write layer.head, e.g. 0.1 for layer 0 head 1, "
                           "separated by commas (or click the grid).") from None
        if not (0 <= layer < n_layers and 0 <= head < n_heads):
            raise gr.Error(f"Head {part} does not exist: this model has layers 0 to {n_layers - 1} and heads "
                           f"0 to {n_heads - 1}.")
        if (layer, head) not in seen:
            seen.add((layer, head))
            heads.append((layer, head))
    return heads


def format_heads(heads) -> str:
    return ", ".join(f"{lay}.{h}" for lay, h in sorted(heads))


def _cell_colour(v: float, vmax: float) -> str:
    """Red for a negative number (the head helped the token), blue for positive."""
    a = 0.0 if vmax <= 0 else min(1.0, abs(v) / vmax)
    return f"rgba(220, 38, 38, {a:.3f})" if v < 0 else f"rgba(37, 99, 235, {a:.3f})"


def head_grid_html(n_layers: int, n_heads: int, selected=(), values: np.ndarray | None = None,
                   elem: str = "hg", note: str = "") -> str:
    """A clickable layers × heads table (numbers only, nothing from the user in it)."""
    chosen = set(selected)
    vmax = float(np.abs(values).max()) if values is not None and values.size else 0.0
    rows = ['<div class="hg" id="' + elem + '"><table><tr><th>layer \\ head</th>'
            + "".join(f"<th>{h}</th>" for h in range(n_heads)) + "</tr>"]
    for lay in range(n_layers):
        cells = []
        for h in range(n_heads):
            cls = ' class="sel"' if (lay, h) in chosen else ""
            if values is None:
                style, text = ("background: rgba(228, 87, 46, 0.25);" if (lay, h) in chosen else
                               "background: rgba(128, 128, 128, 0.12);"), "✕" if (lay, h) in chosen else ""
                title = f"layer {lay}, head {h}: click to {'keep' if (lay, h) in chosen else 'knock out'}"
            else:
                v = float(values[lay, h])
                style, text = f"background: {_cell_colour(v, vmax)};", f"{v:+.2f}"
                title = f"layer {lay}, head {h}: {v:+.4f} (click to open its pattern)"
            cells.append(f'<td{cls} data-layer="{lay}" data-head="{h}" style="{style}" title="{title}">{text}</td>')
        rows.append(f"<tr><th>{lay}</th>{''.join(cells)}</tr>")
    rows.append("</table>" + (f'<div class="hg-note">{html_text(note)}</div>' if note else "") + "</div>")
    return "".join(rows)


def _grid_click(evt) -> tuple[int, int] | None:
    data = getattr(evt, "_data", None) or {}
    try:
        return int(data["layer"]), int(data["head"])
    except (KeyError, TypeError, ValueError):
        return None


def ko_grid(heads_text, model_name):
    """Redraw the knock-out picker for the typed heads (bad text: keep the grid, say nothing yet)."""
    try:
        cfg = get_bundle(model_name).config
        heads = parse_heads(heads_text, cfg.n_layers, cfg.n_heads)
    except gr.Error:
        return gr.skip()
    return head_grid_html(cfg.n_layers, cfg.n_heads, heads, elem="att-ko-cells")


def ko_toggle(heads_text, model_name, evt: gr.EventData):
    """A click on the picker adds or removes that head."""
    hit = _grid_click(evt)
    try:
        cfg = get_bundle(model_name).config
        heads = parse_heads(heads_text, cfg.n_layers, cfg.n_heads)
    except gr.Error:
        heads, cfg = [], get_bundle(model_name).config
    if hit is None or not (0 <= hit[0] < cfg.n_layers and 0 <= hit[1] < cfg.n_heads):
        return gr.skip(), gr.skip()
    heads = [x for x in heads if x != hit] if hit in heads else heads + [hit]
    return format_heads(heads), head_grid_html(cfg.n_layers, cfg.n_heads, heads, elem="att-ko-cells")


def _prompt_ids(bundle, prompt, cap: int) -> tuple[list[int], str]:
    text = check_text(prompt, "prompt", max_chars=MAX_PROMPT_CHARS)
    try:
        tokens = attn_view.encode_prompt_keep_first(bundle.tokenizer, text, bundle.config.context_length, cap)
    except attn_view.PromptError as exc:
        raise gr.Error(str(exc)) from None
    if tokens.truncated:
        raise gr.Error(f"The prompt has {tokens.total:,} tokens; this view takes at most {tokens.limit:,} on "
                       f"{bundle.name} ({tokens.limit_reason}). Shorten it.")
    return tokens.ids, text


def _before_after_figure(tok, before: torch.Tensor, after: torch.Tensor, title: str) -> go.Figure:
    """Horizontal bars: the next-token probabilities of the most likely tokens, before and after."""
    ids = list(dict.fromkeys(before.topk(TOP_SHOWN).indices.tolist() + after.topk(TOP_SHOWN).indices.tolist()))
    ids.sort(key=lambda i: -float(max(before[i], after[i])))
    ids = ids[:TOP_SHOWN + 4]
    labels = [f"{plot_text(token_label(tok, i))} ·#{i}" for i in ids]
    y = np.arange(len(ids))
    fig = go.Figure([
        go.Bar(y=y, x=before[ids].numpy().astype(np.float32), orientation="h", name="before",
               marker_color="#94a3b8", hovertemplate="%{x:.2%}<extra>before</extra>"),
        go.Bar(y=y, x=after[ids].numpy().astype(np.float32), orientation="h", name="after",
               marker_color="#e4572e", hovertemplate="%{x:.2%}<extra>after</extra>"),
    ])
    fig.update_layout(title=title, barmode="group", height=max(320, 90 + 34 * len(ids)),
                      margin=dict(l=10, r=10, t=60, b=10), xaxis=dict(title="probability of the next token",
                                                                         tickformat=".0%"),
                      yaxis=dict(tickvals=list(y), ticktext=labels, autorange="reversed"),
                      legend=dict(orientation="h", y=-0.12))
    return fig


def _tv_distance(p: torch.Tensor, q: torch.Tensor) -> float:
    return 0.5 * float((p - q).abs().sum())


@friendly_errors
def knock_out(prompt, heads_text, which, mode, model_name):
    """The next-token distribution at the last position, with and without the chosen heads."""
    bundle = get_bundle(model_name)
    cfg = bundle.config
    ids, _ = _prompt_ids(bundle, prompt, attn_view.MAX_TOKENS)
    chosen = parse_heads(heads_text, cfg.n_layers, cfg.n_heads)
    if which not in {v for _, v in KO_CHOICES}:
        raise gr.Error("Choose 'knock out these heads' or 'knock out all but these'.")
    if mode not in iv.ABLATION_MODES:
        raise gr.Error(f"Choose how to knock out: {', '.join(iv.ABLATION_MODES)}.")
    every = [(lay, h) for lay in range(cfg.n_layers) for h in range(cfg.n_heads)]
    heads = chosen if which == "these" else [x for x in every if x not in chosen]
    if not heads:
        raise gr.Error("No head is knocked out: click heads on the grid (or type 0.1, 2.3) first."
                       if which == "these" else "Every head is kept: 'all but these' needs fewer heads chosen.")
    with bundle.lock, torch.inference_mode():
        att = attn_view.trace_prompt(bundle.model, bundle.tokenizer, prompt, cache_name=bundle.name)
        clean = att.trace["logits"][0, -1].float()
        ablated = iv.ablate_heads(bundle, ids, heads, mode)[0, -1].float()
    before, after = torch.softmax(clean, -1).cpu(), torch.softmax(ablated, -1).cpu()
    tok = bundle.tokenizer
    top_b, top_a = int(before.argmax()), int(after.argmax())
    what = (f"{len(heads)} of {len(every)} heads knocked out" if which == "these"
            else f"only {len(chosen)} of {len(every)} heads kept")
    fig = _before_after_figure(tok, before, after, f"Next token after the last position: {what} ({mode})")
    names = format_heads(heads) if len(heads) <= 24 else f"{format_heads(heads[:24])}, …"
    md = (f"**{what}** ({mode} ablation): {names}.  \n"
          f"Top guess before: {md_code(token_label(tok, top_b))} ({float(before[top_b]):.1%}); after: "
          f"{md_code(token_label(tok, top_a))} ({float(after[top_a]):.1%}). The probability of "
          f"{md_code(token_label(tok, top_b))} went from {float(before[top_b]):.1%} to {float(after[top_b]):.1%}. "
          f"Total variation distance between the two distributions: {_tv_distance(before, after):.3f} "
          "(0 = unchanged, 1 = nothing in common).")
    return fig, md


def _target(bundle, target_text, logits: torch.Tensor) -> tuple[int, str]:
    target_text = check_text(target_text, "token to explain", max_chars=MAX_TARGET_CHARS, allow_empty=True)
    if target_text == "":
        t = int(logits.argmax())
        return t, "the model's prediction"
    try:
        return attn_view.single_token(bundle.tokenizer, target_text), "the token you chose"
    except attn_view.PromptError as exc:
        raise gr.Error(str(exc)) from None


def _dla_figure(dla: iv.LogitAttribution, label: str) -> go.Figure:
    n_layers, n_heads = dla.heads.shape
    fig = make_subplots(rows=1, cols=2, column_widths=[0.55, 0.45], horizontal_spacing=0.2,
                        subplot_titles=["each head (layers × heads)", "each layer: attention and MLP"])
    z = dla.heads.numpy().astype(np.float32)
    lim = max(1e-6, float(np.abs(z).max()))
    fig.add_trace(go.Heatmap(z=z, x=np.arange(n_heads), y=np.arange(n_layers), zmin=-lim, zmax=lim,
                             colorscale="RdBu_r",   # red = pushes the token up, as in the ablation grid
                             texttemplate="%{z:.2f}" if z.size <= 200 else None,
                             textfont=dict(size=9), colorbar=dict(title="logit", x=0.5, len=0.9, thickness=12),
                             hovertemplate="layer %{y}, head %{x}<br>%{z:+.3f} to the logit<extra></extra>"),
                  row=1, col=1)
    y = np.arange(n_layers)
    fig.add_trace(go.Bar(y=y, x=dla.attn.numpy().astype(np.float32), orientation="h", name="attention",
                         marker_color="#6366f1", hovertemplate="layer %{y} attention: %{x:+.3f}<extra></extra>"),
                  row=1, col=2)
    fig.add_trace(go.Bar(y=y, x=dla.mlp.numpy().astype(np.float32), orientation="h", name="MLP",
                         marker_color="#10b981", hovertemplate="layer %{y} MLP: %{x:+.3f}<extra></extra>"),
                  row=1, col=2)
    fig.update_yaxes(autorange="reversed", dtick=1, title_text="layer")
    fig.update_xaxes(title_text="head", dtick=1, row=1, col=1)
    fig.update_xaxes(title_text="added to the logit", row=1, col=2)
    fig.update_layout(title=f"Direct contribution to the logit of {plot_text(label)}", barmode="group",
                      height=min(900, 200 + 40 * n_layers), margin=dict(l=10, r=10, t=80, b=10),
                      legend=dict(orientation="h", y=-0.15, x=0.6))
    return fig


ATTRIBUTION_NOTE = (
    "**Two ways to ask which heads matter.** The grid *ablates*: each head alone is knocked out and the "
    "change in log p(token) is shown (red: the token became less likely, so the head helped it; one batched "
    "pass per layer). The chart beside it *reads the trace*: what each head and MLP writes into the residual "
    "stream, read along the token's row of the output head — **direct logit attribution**, with the final "
    "LayerNorm's scale frozen at its value in this pass (so the parts add up to the real logit). It sees only "
    "direct effects: a head whose output is used by later layers can matter when ablated yet add little "
    "directly, and the other way round. In both, red means the part helps the token.")


@friendly_errors
def head_attribution_view(prompt, target_text, mode, model_name):
    """Layers × heads: the change in log p(target) when each head is ablated; and direct logit attribution."""
    bundle = get_bundle(model_name)
    cfg = bundle.config
    limit = iv.attribution_token_limit(cfg, attn_view.MAX_TOKENS)
    ids, _ = _prompt_ids(bundle, prompt, limit)
    if mode not in iv.ABLATION_MODES:
        raise gr.Error(f"Choose how to knock out: {', '.join(iv.ABLATION_MODES)}.")
    with bundle.lock, torch.inference_mode():
        att = attn_view.trace_prompt(bundle.model, bundle.tokenizer, prompt, cache_name=bundle.name)
        logits = att.trace["logits"][0, -1].float()
        target, why = _target(bundle, target_text, logits)
        result = iv.head_attribution(bundle, ids, target, mode)
        dla = iv.direct_logit_attribution(bundle.model, att.trace, target)
    label = token_label(bundle.tokenizer, target)
    delta = result.delta.numpy()
    lay, h = np.unravel_index(int(np.argmin(delta)), delta.shape)
    note = f"Δ log p({label}) when the head is ablated ({mode}); click a cell to open that head's pattern."
    grid = head_grid_html(cfg.n_layers, cfg.n_heads, [(int(lay), int(h))], delta, elem="att-attr-cells", note=note)
    top_dla = np.unravel_index(int(np.argmax(dla.heads.numpy())), dla.heads.shape)
    md = (f"Target: {md_code(label)} (id {target}, {why}), p = {np.exp(result.clean_logprob):.1%} at the last "
          f"position.  \nAblation: the head that helps it most is **layer {lay} head {h}** "
          f"(Δ log p = {float(delta[lay, h]):+.3f}); the largest direct contribution is layer {top_dla[0]} head "
          f"{top_dla[1]} ({float(dla.heads[top_dla]):+.3f} to the logit). The parts of the direct attribution "
          f"add up to {dla.total:.3f}; the model's logit is {dla.logit:.3f}.\n\n{ATTRIBUTION_NOTE}")
    return grid, _dla_figure(dla, label), md


def attr_clicked(evt: gr.EventData):
    """A click on the attribution grid selects that layer and head."""
    hit = _grid_click(evt)
    if hit is None:
        return gr.skip(), gr.skip()
    return hit[0], hit[1]


# ---------------------------------------------------------------- links

def prefill_from_url(model_name, request: gr.Request):
    """?tab=attention&text=…&layer=…&head=…&position=… → switch to this tab and fill it in."""
    params = link_params(request, "attention")
    if params is None:
        return gr.update(), gr.update(), gr.update(), gr.update(), gr.update(), False
    try:
        cfg = get_bundle(model_name).config
    except gr.Error:
        return gr.update(), gr.update(), gr.update(), gr.update(), gr.update(), False
    text = params.get("text")
    if text is not None and len(text) > MAX_PROMPT_CHARS:
        gr.Warning(f"The link's text has {len(text):,} characters; the limit is {MAX_PROMPT_CHARS:,}. Ignored it.")
        text = None
    return (gr.Tabs(selected="attention"), text if text and text.strip() else gr.update(),
            link_int(params, "layer", 0, cfg.n_layers - 1), link_int(params, "head", 0, cfg.n_heads - 1),
            link_int(params, "position", -attn_view.MAX_TOKENS, attn_view.MAX_TOKENS - 1), True)


SHARE_JS = share_link_js("text, layer, head, focus", """\
  p.set('tab', 'attention');
  p.set('text', text || '');
  p.set('layer', layer); p.set('head', head); p.set('position', focus);""")


def attention_if_linked(linked, *args):
    """After a link filled the tab in: draw it (nothing to do on a plain visit)."""
    if not linked:
        return tuple(gr.skip() for _ in range(10))
    return attention(*args)


# ---------------------------------------------------------------- the toy example

def _toy_markdown(toy: attn_view.ToyAttention) -> str:
    i, word = toy.query_index, toy.words[toy.query_index]
    x = ", ".join(f"{v:.2f}" for v in toy.inputs[i].tolist())
    lines = [
        f"Query $x^{{({i + 1})}}$ = “{word}” = [{x}]. No trainable weights yet: the scores are plain dot "
        f"products $\\omega_{{{i + 1}j}} = x^{{({i + 1})}} \\cdot x^{{(j)}}$, the weights "
        f"$\\alpha_{{{i + 1}j}} = \\mathrm{{softmax}}(\\omega_{{{i + 1}}})_j$, and the context vector "
        f"$z^{{({i + 1})}} = \\sum_j \\alpha_{{{i + 1}j}}\\, x^{{(j)}}$.",
        "",
        "| j | word | embedding $x^{(j)}$ | score $\\omega$ | weight $\\alpha$ |",
        "|---:|---|---|---:|---:|",
    ]
    for j, w in enumerate(toy.words):
        emb = ", ".join(f"{v:.2f}" for v in toy.inputs[j].tolist())
        lines.append(f"| {j + 1} | {w} | [{emb}] | {float(toy.scores[j]):.4f} | {float(toy.weights[j]):.4f} |")
    z = ", ".join(f"{v:.4f}" for v in toy.context.tolist())
    lines += ["", f"Weights sum to {float(toy.weights.sum()):.4f}. Context vector $z^{{({i + 1})}}$ = **[{z}]**."]
    return "\n".join(lines)


def _toy_figure(toy: attn_view.ToyAttention) -> go.Figure:
    w = toy.all_weights.numpy().astype(np.float32)
    pos = np.arange(len(toy.words))
    fig = go.Figure(go.Heatmap(z=w, x=pos, y=pos, colorscale="Viridis", zmin=0, zmax=float(w.max()),
                               customdata=np.array([[[toy.words[r], toy.words[c]] for c in pos] for r in pos]),
                               texttemplate="%{z:.4f}", textfont=dict(size=11),
                               hovertemplate="query %{customdata[0]}<br>key %{customdata[1]}<br>"
                                             "weight %{z:.4f}<extra></extra>"))
    i = toy.query_index
    fig.add_shape(type="rect", x0=-0.5, x1=len(toy.words) - 0.5, y0=i - 0.5, y1=i + 0.5,
                  line=dict(color="#e4572e", width=3))
    fig.update_layout(title="Every query at once: softmax(X·Xᵀ) (no mask in this first example)", height=420,
                      margin=dict(l=10, r=10, t=50, b=10),
                      xaxis=dict(tickvals=list(pos), ticktext=toy.words),
                      yaxis=dict(autorange="reversed", tickvals=list(pos), ticktext=toy.words))
    return fig


@friendly_errors
def toy_example(word):
    if word not in attn_view.TOY_WORDS:
        raise gr.Error(f"Choose one of the six words: {', '.join(attn_view.TOY_WORDS)}.")
    toy = attn_view.toy_self_attention(word)
    return _toy_markdown(toy), _toy_figure(toy)


# ---------------------------------------------------------------- the tab

def _picker_info(name: str) -> tuple[str, str]:
    try:
        cfg = get_bundle(name).config
    except gr.Error:
        return "Which layer (0 is the first).", "Which head of that layer (0 is the first)."
    return (f"Which layer: 0 to {cfg.n_layers - 1} for this model (0 is nearest the input).",
            f"Which head of that layer: 0 to {cfg.n_heads - 1} for this model.")


def default_prompt(name) -> str:
    try:
        return pick_example(get_bundle(name).tokenizer, DEFAULT_PROMPTS)
    except gr.Error:
        return DEFAULT_PROMPT


def _on_model_change(name, layer, head, prompt):
    """Keep the pickers within the new model's range and say what the range is; a prompt
    still at a default becomes the new model's default; the knock-out grid is redrawn."""
    info_layer, info_head = _picker_info(name)
    try:
        cfg = get_bundle(name).config
        layer = min(max(int(layer or 0), 0), cfg.n_layers - 1)
        head = min(max(int(head or 0), 0), cfg.n_heads - 1)
        grid = head_grid_html(cfg.n_layers, cfg.n_heads, (), elem="att-ko-cells")
    except (gr.Error, TypeError, ValueError):
        layer, head, grid = 0, 0, gr.update()
    prompt = default_prompt(name) if prompt in DEFAULT_PROMPTS else gr.update()
    return (gr.update(value=layer, info=info_layer), gr.update(value=head, info=info_head), prompt, "", grid,
            "", None, "")


DEFAULTS = dict(prompt=DEFAULT_PROMPT, layer=0, head=0, focus=-1, statistic="previous token", math_tokens=6,
                seed=123)


def build(ctx) -> None:
    d = dict(DEFAULTS, prompt=default_prompt(ctx.model_name.value))
    init = ("",) + (None,) * 5 + ("", "", None, None)  # drawn when the tab is first opened (on_first_open)
    toy_init = toy_example("journey")
    info_layer, info_head = _picker_info(ctx.model_name.value)
    try:
        cfg0 = get_bundle(ctx.model_name.value).config
        grid_init = head_grid_html(cfg0.n_layers, cfg0.n_heads, (), elem="att-ko-cells")
    except gr.Error:
        grid_init = ""

    with gr.Tab("4 · Attention", id="attention", elem_id="tab-attention") as tab:
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=3):
                prompt = gr.Textbox(d["prompt"], lines=3, max_lines=8, label="Prompt", elem_id="att-prompt",
                                    max_length=MAX_PROMPT_CHARS,
                                    info=f"Up to {attn_view.MAX_TOKENS} tokens are shown (or the model's context, if "
                                         "shorter); the rest is cut with a notice. <|endoftext|> is the special token.")
                run_btn = gr.Button("Show attention", variant="primary", elem_id="att-run")
            with gr.Column(scale=2):
                with gr.Row():
                    layer = gr.Number(d["layer"], precision=0, label="Layer", elem_id="att-layer", info=info_layer)
                    head = gr.Number(d["head"], precision=0, label="Head", elem_id="att-head", info=info_head)
                with gr.Row():
                    focus = gr.Number(d["focus"], precision=0, label="Token for the head view", elem_id="att-focus",
                                      info="Position of the token whose lines are drawn: 0 is the first, "
                                           "−1 the last, −2 the one before.")
                    statistic = gr.Dropdown(STATISTICS, value=d["statistic"], label="Summary statistic",
                                            elem_id="att-statistic",
                                            info="Colours the grid of every head, so head types stand out.")
        examples = gr.Examples(EXAMPLES, inputs=[prompt, layer, head], elem_id="att-examples",
                               label="Try: a plain sentence, a repeated pattern (look for heads that copy), "
                                     "code, the book's sentence, two documents joined by <|endoftext|>")
        notice = gr.Markdown(init[0], elem_id="att-notice")
        with gr.Row():
            head_plot = gr.Plot(init[1], label="One head", elem_id="att-head-map")
            mean_plot = gr.Plot(init[3], label="Mean over the layer's heads", elem_id="att-mean-map")
        grid_plot = gr.Plot(init[2], label="All heads of the layer", elem_id="att-layer-grid")
        with gr.Row():
            with gr.Column(scale=1):
                head_view = gr.Plot(init[4], label="Head view", elem_id="att-head-view")
            with gr.Column(scale=1):
                summary_plot = gr.Plot(init[5], label="Every head at a glance", elem_id="att-summary")
                summary_text = gr.Markdown(init[6], elem_id="att-summary-text")
        share_btn, share_url = share_link_row("att", "The prompt, layer, head and token travel in the URL "
                                                     "(?tab=attention&text=…&layer=…&head=…&position=…).")

        with gr.Accordion("Knock out heads: what changes when heads are gone", open=True, elem_id="att-ko-box"):
            gr.Markdown("Click heads on the grid (or type them as layer.head) and knock them out: their output, "
                        "the slice of the input to `out_proj` that belongs to them, is replaced by zero or by "
                        "its average over this prompt. The chart compares the next-token distribution at the "
                        "last position before and after.")
            with gr.Row():
                with gr.Column(scale=2):
                    ko_cells = gr.HTML(grid_init, elem_id="att-ko-grid", js_on_load=GRID_JS)
                    ko_heads = gr.Textbox("", label="Heads to knock out (layer.head)", elem_id="att-ko-heads",
                                          placeholder="e.g. 0.1, 2.3", max_length=MAX_HEADS_CHARS,
                                          info="Click the grid to add or remove a head.")
                    ko_which = gr.Radio(KO_CHOICES, value="these", label="Which", elem_id="att-ko-which")
                    ko_mode = gr.Radio(MODE_CHOICES, value="zero", label="Replace the head's output by",
                                       elem_id="att-ko-mode")
                    ko_btn = gr.Button("Knock out", variant="primary", elem_id="att-ko-run")
                with gr.Column(scale=3):
                    ko_plot = gr.Plot(note_figure("Press Knock out: the next token before and after appears here."),
                                      label="Next token, before and after", elem_id="att-ko-plot")
                    ko_md = gr.Markdown("", elem_id="att-ko-md")

        with gr.Accordion("Which heads matter for a token", open=True, elem_id="att-attr-box"):
            with gr.Row():
                target = gr.Textbox("", label="Token to explain", elem_id="att-target", scale=2,
                                    max_length=MAX_TARGET_CHARS,
                                    info="Empty: the model's prediction after the last token. Otherwise one token "
                                         "of this model, e.g. ' the' (a leading space is part of a token).")
                attr_mode = gr.Radio(MODE_CHOICES, value="zero", label="Ablate by", elem_id="att-attr-mode", scale=2)
                attr_btn = gr.Button("Which heads matter?", variant="primary", elem_id="att-attr-run", scale=1)
            with gr.Row():
                with gr.Column(scale=2):
                    attr_cells = gr.HTML("", elem_id="att-attr-grid", js_on_load=GRID_JS)
                with gr.Column(scale=3):
                    dla_plot = gr.Plot(note_figure("Press Which heads matter?: each head's share appears here."),
                                       label="Direct logit attribution", elem_id="att-dla")
            attr_md = gr.Markdown("", elem_id="att-attr-md")

        with gr.Accordion("The maths, step by step, for the chosen layer and head", open=True):
            with gr.Row():
                math_tokens = gr.Slider(1, attn_view.MATH_MAX_TOKENS, value=d["math_tokens"], step=1,
                                        label="Tokens in the maths", elem_id="att-math-tokens",
                                        info="The first few tokens of the prompt (causal attention never looks "
                                             "ahead, so their numbers are the same as in the full pass).")
                seed = gr.Number(d["seed"], precision=0, label="Dropout seed", elem_id="att-seed",
                                 info="Which weights the dropout illustration drops (same seed, same mask).")
            math_md = gr.Markdown(init[7], latex_delimiters=LATEX, elem_id="att-math")
            math_qkv = gr.Plot(init[8], label="Q, K, V", elem_id="att-math-qkv")
            math_scores = gr.Plot(init[9], label="From scores to context vectors", elem_id="att-math-scores")

        with gr.Accordion("The book's first example: self-attention without trainable weights", open=False):
            gr.Markdown("“Your journey starts with one step”, six words with 3-d embeddings (section 3.3). "
                        "Pick the query word.")
            toy_word = gr.Radio(attn_view.TOY_WORDS, value="journey", label="Query word", elem_id="att-toy-word",
                                info="The word whose context vector is computed (the book uses “journey”).")
            toy_md = gr.Markdown(toy_init[0], latex_delimiters=LATEX, elem_id="att-toy")
            toy_plot = gr.Plot(toy_init[1], label="Attention weights", elem_id="att-toy-map")

        inputs = [prompt, layer, head, focus, statistic, math_tokens, seed, ctx.model_name]
        outputs = [notice, head_plot, grid_plot, mean_plot, head_view, summary_plot, summary_text,
                   math_md, math_qkv, math_scores]
        gr.on([run_btn.click, prompt.submit, layer.submit, head.submit, focus.submit, statistic.input,
               math_tokens.release, seed.submit],
              attention, inputs, outputs, api_name="attention", concurrency_id=CPU_HEAVY,
              trigger_mode="always_last")
        on_first_open(tab, attention, inputs, outputs, concurrency_id=CPU_HEAVY)
        ctx.model_changed.change(_on_model_change, [ctx.model_name, layer, head, prompt],
                                 [layer, head, prompt, ko_heads, ko_cells, attr_cells, dla_plot, attr_md],
                                 api_visibility="private", queue=False).then(
            attention, inputs, outputs, api_visibility="private", concurrency_id=CPU_HEAVY)

        ko_cells.click(ko_toggle, [ko_heads, ctx.model_name], [ko_heads, ko_cells], api_visibility="private",
                       queue=False)
        ko_heads.input(ko_grid, [ko_heads, ctx.model_name], ko_cells, api_visibility="private", queue=False,
                       trigger_mode="always_last")
        gr.on([ko_btn.click, ko_heads.submit], knock_out, [prompt, ko_heads, ko_which, ko_mode, ctx.model_name],
              [ko_plot, ko_md], api_name="knock_out_heads", concurrency_id=CPU_HEAVY)
        gr.on([attr_btn.click, target.submit], head_attribution_view, [prompt, target, attr_mode, ctx.model_name],
              [attr_cells, dla_plot, attr_md], api_name="head_attribution", concurrency_id=CPU_HEAVY)
        attr_cells.click(attr_clicked, None, [layer, head], api_visibility="private", queue=False).then(
            attention, inputs, outputs, api_visibility="private", concurrency_id=CPU_HEAVY)
        share_btn.click(None, [prompt, layer, head, focus], share_url, js=SHARE_JS)

        linked = gr.State(False)
        root = gr.context.Context.root_block
        tabs_out = ctx.tabs if ctx.tabs is not None else gr.State()
        root.load(prefill_from_url, ctx.model_name, [tabs_out, prompt, layer, head, focus, linked],
                  api_visibility="private").then(attention_if_linked, [linked, *inputs], outputs,
                                                 api_visibility="private", concurrency_id=CPU_HEAVY)
        ctx.shared["attention"] = dict(prompt=prompt, layer=layer, head=head, focus=focus, target=target,
                                       inputs=inputs, outputs=outputs, run=attention)
        toy_word.change(toy_example, toy_word, [toy_md, toy_plot], api_name="attention_toy")

        examples.load_input_event.then(attention, inputs, outputs, api_visibility="private",
                                       concurrency_id=CPU_HEAVY)
