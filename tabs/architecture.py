"""Stage 5 · Architecture: what a GPTModel is made of, counted from its modules, and what
happens to a prompt on its way through (residual stream, logit lens, LayerNorm)."""
from __future__ import annotations


import gradio as gr
import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots
import torch

from llm_core.views import architecture_view as arch_view
from llm_core import interventions as iv
from llm_core.config import PRESET_LABELS, PRESETS
from llm_core.views.token_text import token_label
from llm_core.examples import pick_example
from tabs.common import (CPU_HEAVY, check_choice, check_int, check_text, friendly_errors, get_bundle, link_int,
                         link_params)
from tabs.figures import note_figure
from tabs.lazy import on_first_open
from tabs.markup import html_text, md_text, plot_text

DEFAULT_PROMPT = "Every effort moves you forward, and the model guesses the next token at every position"
# First-load prompts; the one whose words the active tokenizer keeps whole is shown.
DEFAULT_PROMPTS = [DEFAULT_PROMPT, "Return a list of the values in the file, and the model guesses the next "
                                   "token at every position"]
MAX_PROMPT_CHARS = 5_000
MAX_TOKENS = 128          # positions traced and drawn (heatmap columns)
PRECOMPUTE_MAX_PARAMS = 40_000_000  # draw the prompt's run on first opening only for small models
LENS_TEXT_TOKENS = 24     # above this the heatmap cells carry no printed labels (hover still works)
MAX_TOP_K = 10
# Clean / corrupted prompt pairs for activation patching, tried in order: the first whose
# prompts have the same length and different predictions on the active model is shown.
PATCH_PAIRS = [("The Eiffel Tower is in", "The Colosseum is in"),
               ("Open the file and read the", "Open the list and sort the"),
               ("If the list is a list, the list", "If the file is a file, the file")]
SITE_CHOICES = [("residual stream entering the layer", "resid_pre"), ("attention output", "attn.out"),
                ("MLP output", "ff.out")]
NORM_CHOICES = [("LayerNorm 1 (before attention)", "norm1"), ("LayerNorm 2 (before feed-forward)", "norm2"),
                ("final LayerNorm (before the output head)", "final")]

INTRO = """## 5 · Architecture
A GPT is a stack of identical **TransformerBlocks** between an embedding layer and an output
head. Each block normalises its input, lets every token look back at earlier tokens (masked
multi-head attention), adds the result to its input (a *shortcut*), then does the same with a
small feed-forward network. The running sum that the shortcuts carry from block to block is the
**residual stream**. Counts below are read from the active model's own modules."""

# ---------------------------------------------------------------- config, counts, diagram

def config_markdown(bundle) -> str:
    c = bundle.config
    rows = [("vocab_size", f"{c.vocab_size:,}", "tokens it knows"),
            ("context_length", f"{c.context_length:,}", "positions it sees at once"),
            ("emb_dim", c.emb_dim, "width of each token's vector"),
            ("n_heads", c.n_heads, f"attention heads, {c.head_dim} dims each"),
            ("n_layers", c.n_layers, "TransformerBlocks stacked"),
            ("drop_rate", c.drop_rate, "dropout while training"),
            ("qkv_bias", c.qkv_bias, "bias in W_query/W_key/W_value"),
            ("tie_weights", c.tie_weights, "head shares the token table")]
    table = "| setting | value | meaning |\n|---|---|---|\n" + "\n".join(
        f"| `{k}` | {md_text(v)} | {m} |" for k, v, m in rows)
    return f"**{md_text(bundle.name)}** ({md_text(bundle.source)})\n\n{table}"


def counts_rows(counts: arch_view.ParameterBreakdown) -> list[list]:
    total = counts.untied_total
    return [[name, "" if per is None else f"{per:,}", f"{count:,}", f"{100 * count / total:.1f} %", note]
            for name, per, count, note in counts.rows()]


def counts_markdown(counts: arch_view.ParameterBreakdown, what: str) -> str:
    mb = counts.megabytes
    lines = ["| | parameters | fp32 | bf16 |", "|---|---|---|---|",
             f"| without weight tying (head is its own matrix) | **{counts.untied_total:,}** | "
             f"{mb(counts.untied_total):,.2f} MB | {mb(counts.untied_total, 'bf16'):,.2f} MB |"]
    if counts.tied_total is not None:
        lines.append(f"| with weight tying (head = token embedding) | **{counts.tied_total:,}** | "
                     f"{mb(counts.tied_total):,.2f} MB | {mb(counts.tied_total, 'bf16'):,.2f} MB |")
    state = ("This model **ties** its head, so it has the smaller count." if counts.tied
             else "This model keeps a separate head (like the book's GPTModel); OpenAI's GPT-2 ties them."
             if counts.tieable else "This model's head has a different shape from the token table, so it "
             "cannot be tied (a classifier head, for instance).")
    return (f"{what}\n\n" + "\n".join(lines) + f"\n\n{state} MB = 2²⁰ bytes: 4 bytes per parameter in fp32, 2 in "
            "bf16; training needs several times more (gradients, optimizer state, activations).")


def diagram_html(overview: arch_view.Overview) -> str:
    """An SVG flow chart of the model, every label escaped."""
    cfg, counts, nodes = overview.cfg, overview.counts, overview.diagram
    box_x, box_w, box_h, gap, note_x = 70, 330, 46, 16, 430
    y = 20
    parts, layout = [], []
    for node in nodes:
        if node.in_block and not any(n.in_block for n, _ in layout):
            y += 26  # room for the group title
        layout.append((node, y))
        y += box_h + gap
        if node.key == "add2":
            y += 14
    height = y + 10
    block_nodes = [(n, ny) for n, ny in layout if n.in_block]
    if block_nodes:
        top, bottom = block_nodes[0][1] - 30, block_nodes[-1][1] + box_h + 12
        parts.append(f'<rect class="group" x="{box_x - 50}" y="{top}" width="{box_w + 62}" '
                     f'height="{bottom - top}" rx="10"/>')
        parts.append(f'<text class="grp" x="{box_x - 40}" y="{top + 18}">'
                     f'{html_text(f"× {counts.n_layers} TransformerBlock")}</text>')
    centre = box_x + box_w / 2
    for i, (node, ny) in enumerate(layout):
        if i:
            prev_y = layout[i - 1][1] + box_h
            parts.append(f'<line x1="{centre}" y1="{prev_y}" x2="{centre}" y2="{ny}" marker-end="url(#arrow)"/>')
        cls = "box add" if node.shortcut == "add" else "box blk" if node.in_block else "box"
        parts.append(f'<rect class="{cls}" x="{box_x}" y="{ny}" width="{box_w}" height="{box_h}" rx="7"/>')
        label = ("⊕ " if node.shortcut == "add" else "") + node.label
        parts.append(f'<text class="lbl" x="{box_x + 12}" y="{ny + 19}">{html_text(label)}</text>')
        if node.detail:
            parts.append(f'<text class="det" x="{box_x + 12}" y="{ny + 36}">{html_text(node.detail)}</text>')
        parts.append(f'<text class="note" x="{note_x}" y="{ny + 19}">{html_text(node.shape)}</text>')
        if node.params:
            each = " per block" if node.in_block else ""
            parts.append(f'<text class="note" x="{note_x}" y="{ny + 36}">'
                         f'{html_text(f"{node.params:,} params{each}")}</text>')
    # Shortcuts: from just above each LayerNorm around the left side into the matching ⊕.
    starts = [ny for n, ny in layout if n.shortcut == "start"]
    adds = [ny for n, ny in layout if n.shortcut == "add"]
    for sy, ay in zip(starts, adds):
        branch_y, join_y, x_side = sy - gap / 2, ay + box_h / 2, box_x - 24
        parts.append(f'<path d="M {centre} {branch_y} H {x_side} V {join_y} H {box_x}" marker-end="url(#arrow)"/>')
        parts.append(f'<text class="det" x="{x_side - 4}" y="{(branch_y + join_y) / 2}" text-anchor="end" '
                     f'transform="rotate(-90 {x_side - 4} {(branch_y + join_y) / 2})">shortcut</text>')
    width = note_x + 230
    defs = ('<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
            'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" style="fill: currentColor"/></marker></defs>')
    title = html_text(f"GPT block diagram: {counts.n_layers} blocks, {cfg.emb_dim} dims, {cfg.n_heads} heads")
    return (f'<div class="arch" id="arch-svg"><svg viewBox="0 0 {width} {height}" width="{width}" role="img" '
            f'aria-label="{title}"><title>{title}</title>{defs}{"".join(parts)}</svg></div>')


def model_overview(model_name=None):
    bundle = get_bundle(model_name)
    overview = arch_view.model_overview(bundle.model)
    what = f"**{md_text(bundle.name)}**, counted from its modules:"
    return (config_markdown(bundle), diagram_html(overview), counts_rows(overview.counts),
            counts_markdown(overview.counts, what))


@friendly_errors
def preset_counts(preset, qkv_bias):
    """Parameter counts of any preset from its config alone (no weights are built)."""
    if preset not in PRESETS:
        raise gr.Error(f"Unknown preset {preset!r}: choose one of {', '.join(PRESETS)}.")
    cfg = PRESETS[preset].with_(qkv_bias=bool(qkv_bias))
    overview = arch_view.config_overview(cfg)
    what = f"**{md_text(PRESET_LABELS[preset])}**{', qkv_bias=True' if qkv_bias else ''}, counted from the config:"
    return counts_rows(overview.counts), counts_markdown(overview.counts, what), diagram_html(overview)


def activation_figure() -> go.Figure:
    c = arch_view.activation_curves()
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=c["x"], y=c["GELU"], name="GELU (tanh approximation)", line=dict(width=3)))
    fig.add_trace(go.Scatter(x=c["x"], y=c["ReLU"], name="ReLU", line=dict(dash="dash")))
    fig.update_layout(title="GELU vs ReLU", height=360, xaxis_title="x", yaxis_title="activation",
                      margin=dict(l=10, r=10, t=50, b=10), legend=dict(orientation="h", y=-0.2))
    return fig


# ---------------------------------------------------------------- a prompt through the model

def residual_figure(stages: list[str], norms: np.ndarray, tokens: list[str]) -> go.Figure:
    fig = go.Figure()
    shown = min(norms.shape[1], 32)
    for t in range(shown):
        fig.add_trace(go.Scatter(x=stages, y=norms[:, t], mode="lines", line=dict(width=1), opacity=0.35,
                                 name=f"{t}: {plot_text(tokens[t])}", showlegend=False,
                                 hovertemplate=f"{t}: {plot_text(tokens[t])}<br>%{{x}}: %{{y:.2f}}<extra></extra>"))
    fig.add_trace(go.Scatter(x=stages, y=norms.mean(1), mode="lines+markers", line=dict(width=4, color="#dc2626"),
                             name="mean over positions"))
    note = f" (thin lines: the first {shown} positions)" if shown < norms.shape[1] else " (thin lines: each position)"
    fig.update_layout(title="Length of the residual stream after each stage" + note, height=420,
                      yaxis_title="L2 norm", margin=dict(l=10, r=10, t=50, b=10),
                      legend=dict(orientation="h", y=-0.25))
    return fig


def lens_figure(lens: arch_view.LogitLens, tokens: list[str]) -> go.Figure:
    n_stages, n_pos, _ = lens.top_ids.shape
    # Positions and stage indices on the axes (labels as ticks): no two cells can merge.
    cols = [f"{t}: {plot_text(tok)}" for t, tok in enumerate(tokens)]
    rows = [plot_text(s) for s in lens.stages]
    top1 = np.array([[plot_text(lens.top_labels[s][t][0]) for t in range(n_pos)] for s in range(n_stages)],
                    dtype=object)
    hover = np.array([[rows[s] + " · after " + cols[t] + "<br>" + "<br>".join(
        f"{plot_text(lbl)}  {_pct(p)}" for lbl, p in zip(lens.top_labels[s][t], lens.top_probs[s, t].tolist()))
        for t in range(n_pos)] for s in range(n_stages)], dtype=object)
    heat = go.Heatmap(z=lens.top_probs[:, :, 0], x=np.arange(n_pos), y=np.arange(n_stages), zmin=0, zmax=1,
                      colorscale="Viridis", text=top1, customdata=hover, colorbar=dict(title="p(top)"),
                      hovertemplate="%{customdata}<extra></extra>")
    if n_pos <= LENS_TEXT_TOKENS:
        heat.update(texttemplate="%{text}", textfont=dict(size=10))
    fig = go.Figure(heat)
    step = max(1, -(-n_pos // 40))
    fig.update_xaxes(tickvals=list(range(0, n_pos, step)), ticktext=cols[::step], tickangle=-45)
    fig.update_yaxes(tickvals=list(range(n_stages)), ticktext=rows, autorange="reversed")
    fig.update_layout(title="Logit lens: each stage's top guess for the next token (colour = its probability)",
                      height=max(320, 120 + 28 * n_stages), margin=dict(l=10, r=10, t=50, b=10))
    return fig


def _pct(p: float) -> str:
    """Probabilities from 90 % down to 0.002 % (an untrained model's 1/50,257) stay readable."""
    return f"{p:.1%}" if p >= 0.001 else f"{100 * p:.2g} %"


def lens_rows(lens: arch_view.LogitLens, position: int) -> pd.DataFrame:
    k = lens.top_ids.shape[2]
    rows = [[stage] + [f"{lbl} ({_pct(p)})" for lbl, p in zip(lens.top_labels[s][position],
                                                           lens.top_probs[s, position].tolist())]
            for s, stage in enumerate(lens.stages)]
    return pd.DataFrame(rows, columns=["stage"] + [f"guess {i + 1}" for i in range(k)])


def layernorm_figure(demo: arch_view.LayerNormDemo) -> go.Figure:
    """One histogram per stage, each on its own x scale (the input may be 100× larger or smaller)."""
    parts = [("before", demo.before, demo.stats["before"]),
             ("normalised", demo.normalised, demo.stats["normalised"]),
             ("after scale & shift", demo.after, demo.stats["after scale & shift"])]
    titles = [f"{name}<br>mean {m:+.3f}, var {v:.3f}" for name, _, (m, v) in parts]
    fig = make_subplots(rows=1, cols=3, subplot_titles=titles, horizontal_spacing=0.06)
    colours = ["#64748b", "#2563eb", "#16a34a"]
    for i, ((name, values, _), colour) in enumerate(zip(parts, colours), 1):
        fig.add_trace(go.Histogram(x=values.astype(np.float32), name=name, nbinsx=40, marker_color=colour,
                                   showlegend=False), row=1, col=i)
    fig.update_yaxes(title_text="dimensions", row=1, col=1)
    fig.update_layout(title=f"One activation vector's {demo.before.shape[0]} values: {plot_text(demo.where)}",
                      height=410, margin=dict(l=10, r=10, t=115, b=10), bargap=0.05)
    return fig


def layernorm_markdown(demo: arch_view.LayerNormDemo) -> str:
    rows = "\n".join(f"| {name} | {m:+.4f} | {v:.4f} |" for name, (m, v) in demo.stats.items())
    return (f"**{md_text(demo.where)}**\n\n| vector | mean | variance |\n|---|---|---|\n{rows}\n\n"
            "LayerNorm subtracts the mean and divides by the standard deviation (eps = 1e-5), so every vector "
            "reaches the next layer at the same scale; the trained `scale` and `shift` then let the model "
            "choose a different scale per dimension.")


@friendly_errors
def architecture(prompt, top_k, layer, which, position, model_name=None):
    """Everything about the active model, and one traced pass of the prompt through it."""
    bundle = get_bundle(model_name)
    config_md, diagram, rows, totals = model_overview(model_name)
    prompt = check_text(prompt, what="prompt", max_chars=MAX_PROMPT_CHARS)
    k = check_int(top_k, "Top-k guesses", 1, MAX_TOP_K)
    n_layers = bundle.config.n_layers
    check_choice(which, [v for _, v in NORM_CHOICES], "Which LayerNorm")
    layer = check_int(layer, "Layer", 0, n_layers - 1) if which != "final" else n_layers - 1
    ids = bundle.tokenizer.encode(prompt)
    if not ids:
        raise gr.Error("The prompt has no tokens: type some text.")
    context = bundle.config.context_length
    notice = ""
    cap = min(MAX_TOKENS, context)
    if len(ids) > cap:
        why = (f"the model's context length is {context}" if context <= MAX_TOKENS
               else f"the views show at most {MAX_TOKENS} positions")
        notice = f"The prompt has {len(ids):,} tokens; {why}, so the first {cap} are used."
        gr.Warning(notice)
        ids = ids[:cap]
    if max(ids) >= bundle.model.tok_emb.weight.shape[0]:
        raise gr.Error("This text contains a token the model has no embedding for; try plainer text.")
    t = len(ids)
    pos = check_int(position, "Position", -t, t - 1)
    with torch.inference_mode():
        view = arch_view.prompt_view(bundle.model, bundle.tokenizer, ids, k, layer, pos, which,
                                     cache_name=bundle.name, max_top_k=MAX_TOP_K)
        dla = iv.direct_logit_attribution(bundle.model, view.trace, view.predicted, view.position)
    tokens, p = view.labels, view.position
    lens_note = (f"At position {p} (token <code>{md_text(tokens[p])}</code>): the next token each stage would "
                 "predict if the model stopped there — final LayerNorm and output head applied to that stage's "
                 "residual stream. The last row is the model's real prediction.")
    if notice:
        lens_note = md_text(notice) + "\n\n" + lens_note
    layer_update = gr.update(info=_layer_info(n_layers))
    dla_fig = dla_figure(dla, view.predicted_label, tokens[p], p)
    return (config_md, diagram, rows, totals, residual_figure(view.stages, view.norms, tokens),
            lens_figure(view.lens, tokens), lens_rows(view.lens, p), lens_note, layernorm_figure(view.layernorm),
            layernorm_markdown(view.layernorm), layer_update, dla_fig)


def dla_figure(dla: iv.LogitAttribution, predicted: str, token: str, position: int) -> go.Figure:
    """What each layer's attention and MLP add directly to the logit of the prediction."""
    n = len(dla.attn)
    names = ["embeddings"] + [f"layer {i}" for i in range(n)]
    attn = [0.0] + dla.attn.tolist()
    mlp = [0.0] + dla.mlp.tolist()
    embed = [dla.embed] + [0.0] * n
    y = np.arange(n + 1)
    fig = go.Figure([
        go.Bar(y=y, x=np.array(embed, dtype=np.float32), orientation="h", name="embeddings", marker_color="#94a3b8"),
        go.Bar(y=y, x=np.array(attn, dtype=np.float32), orientation="h", name="attention", marker_color="#6366f1"),
        go.Bar(y=y, x=np.array(mlp, dtype=np.float32), orientation="h", name="MLP", marker_color="#10b981"),
    ])
    fig.update_traces(hovertemplate="%{x:+.3f}<extra>%{fullData.name}</extra>")
    fig.update_layout(
        title=(f"What each layer adds to the logit of {plot_text(predicted)}<br>"
               f"<sup>the prediction after position {position} ({plot_text(token)})<br>"
               f"final LayerNorm scale frozen; parts sum to {dla.total:.2f}<br>(logit {dla.logit:.2f}; "
               f"LayerNorm shift {dla.final_bias:+.2f})</sup>"),
        barmode="relative", height=max(360, 190 + 30 * (n + 1)), margin=dict(l=10, r=10, t=120, b=10),
        yaxis=dict(tickvals=list(y), ticktext=names, autorange="reversed"),
        xaxis=dict(title="added to the logit", zeroline=True), legend=dict(orientation="h", y=-0.3))
    return fig


def suitable_pair(bundle, pairs=PATCH_PAIRS) -> tuple[str, str]:
    """The first pair with equal lengths whose predictions differ on this model (GPT-2's
    classic pair first), else the first pair of equal length."""
    tok, fallback = bundle.tokenizer, None
    for clean, corrupt in pairs:
        a, b = tok.encode(clean), tok.encode(corrupt)
        if len(a) != len(b) or not a or len(a) > iv.patching_token_limit(bundle.config):
            continue
        fallback = fallback or (clean, corrupt)
        with torch.inference_mode():
            logits = bundle.model(torch.tensor([a, b], device=bundle.model.device), last_only=True)[:, -1]
        if int(logits[0].argmax()) != int(logits[1].argmax()):
            return clean, corrupt
    return fallback or pairs[0]


MAX_ANSWER_CHARS = 200


def _answer(bundle, text, logits: torch.Tensor) -> int:
    text = check_text(text, "answer", max_chars=MAX_ANSWER_CHARS, allow_empty=True)
    if not text:
        return int(logits.argmax())
    ids = bundle.tokenizer.encode(text)
    if len(ids) != 1:
        pieces = " | ".join(token_label(bundle.tokenizer, i) for i in ids) or "nothing"
        raise gr.Error(f"The answer {text!r} is {len(ids)} tokens of this model ({md_text(pieces)}), not one: "
                       "choose one token (a leading space is part of it), or leave it empty for the prediction.")
    return ids[0]


def patching_figure(res: iv.PatchingMap, tokens: list[str], clean_label: str, corrupt_label: str) -> go.Figure:
    z = res.restored.numpy().astype(np.float32)
    n_layers, t = z.shape
    cols = [f"{i}: {plot_text(tok)}" for i, tok in enumerate(tokens)]
    heat = go.Heatmap(z=z, x=np.arange(t), y=np.arange(n_layers), zmid=0, colorscale="RdBu_r",
                      zmin=min(-0.1, float(z.min())), zmax=max(1.0, float(z.max())),
                      customdata=np.array([cols] * n_layers, dtype=object),
                      hovertemplate="layer %{y}, position %{customdata}<br>restored %{z:.1%}<extra></extra>",
                      colorbar=dict(title="restored"), texttemplate="%{z:.2f}" if z.size <= 400 else None,
                      textfont=dict(size=9))
    fig = go.Figure(heat)
    fig.update_layout(
        title=(f"How much of the clean answer each patch restores ({plot_text(PATCH_SITE_NAMES[res.site])})<br>"
               f"<sup>1 = logit({plot_text(clean_label)}) − logit({plot_text(corrupt_label)}) as on the clean "
               f"prompt ({res.clean_diff:+.2f}), 0 = as on the corrupted one ({res.corrupt_diff:+.2f})</sup>"),
        height=max(320, 150 + 30 * n_layers), margin=dict(l=10, r=10, t=90, b=10),
        xaxis=dict(tickvals=list(range(t)), ticktext=cols, tickangle=-45, title="position (clean prompt's tokens)"),
        yaxis=dict(tickvals=list(range(n_layers)), ticktext=[f"layer {i}" for i in range(n_layers)],
                   autorange="reversed"))
    return fig


PATCH_SITE_NAMES = {v: k for k, v in SITE_CHOICES}


@friendly_errors
def patching(clean, corrupt, site, clean_answer, corrupt_answer, model_name=None):
    """Activation patching: layers × positions, the share of the clean answer each patch restores."""
    bundle = get_bundle(model_name)
    clean = check_text(clean, what="clean prompt", max_chars=MAX_PROMPT_CHARS)
    corrupt = check_text(corrupt, what="corrupted prompt", max_chars=MAX_PROMPT_CHARS)
    if site not in PATCH_SITE_NAMES:
        raise gr.Error(f"Choose what to patch: {', '.join(PATCH_SITE_NAMES)}.")
    tok = bundle.tokenizer
    a, b = tok.encode(clean), tok.encode(corrupt)
    if len(a) != len(b):
        raise gr.Error(f"The clean prompt has {len(a)} tokens and the corrupted one {len(b)}: patching swaps "
                       "activations position by position, so both need the same number of tokens. Change a word "
                       "for one of the same token length (the Tokenizer tab shows the split).")
    limit = iv.patching_token_limit(bundle.config)
    if len(a) > limit:
        raise gr.Error(f"The prompts have {len(a)} tokens; on {bundle.name} patching takes at most {limit} "
                       "(one pass per layer and position). Shorten them.")
    if max(a + b) >= bundle.config.vocab_size:
        raise gr.Error("This text contains a token the model has no embedding for; try plainer text.")
    with torch.inference_mode():
        logits = bundle.model(torch.tensor([a, b], device=bundle.model.device), last_only=True)[:, -1].float()
        ca, xa = _answer(bundle, clean_answer, logits[0]), _answer(bundle, corrupt_answer, logits[1])
        try:
            res = iv.patching_map(bundle, a, b, ca, xa, site)
        except iv.InterventionError as exc:
            raise gr.Error(str(exc)) from None
    labels = [token_label(tok, i) for i in a]
    cl, xl = token_label(tok, ca), token_label(tok, xa)
    best = np.unravel_index(int(np.argmax(res.restored.numpy())), res.restored.shape)
    md = (f"Clean answer <code>{html_text(cl)}</code>, corrupted answer <code>{html_text(xl)}</code>. "
          f"Each cell runs the corrupted prompt with the {md_text(PATCH_SITE_NAMES[site])} taken from the clean run "
          f"at one layer and one position. The strongest patch is **layer {best[0]}, position {best[1]}** "
          f"(<code>{html_text(labels[best[1]])}</code>): {float(res.restored[best]):.0%} of the way back. "
          "Early layers usually matter at the positions where the prompts differ; later, the information "
          "has moved to the last position, which is where the answer is read.")
    return patching_figure(res, labels, cl, xl), md


# ---------------------------------------------------------------- the tab

def prefill_from_url(model_name, request: gr.Request):
    """?tab=architecture&text=…&layer=…&position=… → switch to this tab and fill it in."""

    keep = (gr.update(),) * 4 + (False,)
    params = link_params(request, "architecture")
    if params is None:
        return keep
    try:
        n_layers = get_bundle(model_name).config.n_layers
    except gr.Error:
        return keep
    text = params.get("text")
    if text is not None and len(text) > MAX_PROMPT_CHARS:
        gr.Warning(f"The link's text has {len(text):,} characters; the limit is {MAX_PROMPT_CHARS:,}. Ignored it.")
        text = None
    return (gr.Tabs(selected="architecture"), text if text and text.strip() else gr.update(),
            link_int(params, "layer", 0, n_layers - 1), link_int(params, "position", -MAX_TOKENS, MAX_TOKENS - 1),
            True)


def architecture_if_linked(linked, *args):
    if not linked:
        return tuple(gr.skip() for _ in range(12))
    return architecture(*args)


def _layer_info(n_layers: int) -> str:
    return f"Which layer's LayerNorm: 0 to {n_layers - 1} for this model (ignored for the final LayerNorm)."


def build(ctx) -> None:
    init_model = ctx.model_name.value
    try:
        bundle = get_bundle(init_model)
        init = model_overview(init_model)
        n_layers = bundle.config.n_layers
        default_prompt = pick_example(bundle.tokenizer, DEFAULT_PROMPTS)
        run = None  # the prompt's run is drawn when the tab is first opened (on_first_open)
        small = bundle.num_parameters <= PRECOMPUTE_MAX_PARAMS
        pair = suitable_pair(bundle)
    except gr.Error:
        init, n_layers, run, small = ("", "", [], ""), max(PRESETS[k].n_layers for k in PRESETS), None, False
        pair, default_prompt = PATCH_PAIRS[0], DEFAULT_PROMPT
    run = run or (None,) * 4 + (None, None, None, "", None, "", None, None)
    first_preset = "gpt2-small"
    preset_init = preset_counts(first_preset, False)
    lens_headers = ["stage"] + [f"guess {i + 1}" for i in range(MAX_TOP_K)]

    with gr.Tab("5 · Architecture", id="architecture", elem_id="tab-architecture") as tab:
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=1):
                gr.Markdown("### The active model")
                config_md = gr.Markdown(init[0], elem_id="arch-config")
            with gr.Column(scale=1):
                diagram = gr.HTML(init[1], elem_id="arch-diagram")
        totals_md = gr.Markdown(init[3], elem_id="arch-totals")
        params = gr.Dataframe(init[2], headers=["component", "per block", "parameters", "share", "note"],
                              interactive=False, wrap=True, elem_id="arch-params",
                              label="Parameters per component (shares of the untied total)")

        with gr.Accordion("Any GPT-2 size, counted from its config (no weights loaded)", open=False,
                          elem_id="arch-presets-box"):
            with gr.Row():
                preset = gr.Dropdown([(PRESET_LABELS[k], k) for k in PRESETS], value=first_preset, label="Preset",
                                     elem_id="arch-preset", info="The four GPT-2 sizes and this app's small configs.")
                qkv = gr.Checkbox(False, label="qkv_bias", elem_id="arch-qkv",
                                  info="OpenAI's weights have biases in W_query/W_key/W_value (the book's counts "
                                       "leave them out).")
            preset_md = gr.Markdown(preset_init[1], elem_id="arch-preset-totals")
            preset_table = gr.Dataframe(preset_init[0], headers=["component", "per block", "parameters", "share",
                                                                 "note"],
                                        interactive=False, wrap=True, elem_id="arch-preset-params")
            preset_diagram = gr.HTML(preset_init[2], elem_id="arch-preset-diagram")

        with gr.Row():
            with gr.Column():
                gr.Plot(activation_figure(), label="GELU vs ReLU", elem_id="arch-gelu")
            with gr.Column():
                gr.Markdown("GELU, the feed-forward network's non-linearity, is smooth: it lets small negative "
                            "values through (its minimum is about −0.17 near x = −0.75) where ReLU cuts them to "
                            "zero, which gives non-zero gradients everywhere. GPT-2 uses the tanh approximation "
                            "0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).")

        gr.Markdown("### A prompt on its way through the model")
        with gr.Row():
            prompt = gr.Textbox(default_prompt, lines=2, label="Prompt", elem_id="arch-prompt", scale=3,
                                max_length=MAX_PROMPT_CHARS,
                                info=f"One traced forward pass; at most {MAX_TOKENS} tokens are shown.")
            top_k = gr.Slider(1, MAX_TOP_K, value=3, step=1, label="Top-k guesses", elem_id="arch-topk",
                              info="Guesses per stage in the logit-lens table.")
        with gr.Row():
            which = gr.Radio(NORM_CHOICES, value="norm1", label="LayerNorm to inspect", elem_id="arch-which",
                             info="Which normalisation the LayerNorm demo looks at.")
            # A Number, not a Slider: the valid range changes with the model, and the server checks it.
            layer = gr.Number(0, precision=0, label="Layer", elem_id="arch-layer", info=_layer_info(n_layers))
            position = gr.Number(-1, precision=0, label="Position", elem_id="arch-position",
                                 info="Token position for the LayerNorm demo and the lens table (−1 = last).")
        run_btn = gr.Button("Run the prompt through the model", variant="primary", elem_id="arch-run")
        residual_plot = gr.Plot(run[4], label="Residual stream norms", elem_id="arch-residual")
        with gr.Row():
            with gr.Column(scale=3):
                lens_plot = gr.Plot(run[5], label="Logit lens", elem_id="arch-lens")
            with gr.Column(scale=2):
                dla_plot = gr.Plot(run[11], label="Direct logit attribution per layer", elem_id="arch-dla")
        lens_note = gr.Markdown(run[7], elem_id="arch-lens-note")
        lens_table = gr.Dataframe(run[6], headers=lens_headers[:4], interactive=False, elem_id="arch-lens-table",
                                  label="Top guesses per stage at the chosen position")
        with gr.Row():
            ln_plot = gr.Plot(run[8], label="LayerNorm on a real activation", elem_id="arch-ln")
            ln_md = gr.Markdown(run[9], elem_id="arch-ln-md")

        inputs = [prompt, top_k, layer, which, position, ctx.model_name]
        with gr.Accordion("Activation patching: which layer and position carry the answer", open=True,
                          elem_id="arch-patch-box"):
            gr.Markdown("Run a **corrupted** prompt, but at one layer and one position put back the activation "
                        "from the **clean** prompt, and see how much of the clean answer returns. Both prompts "
                        "need the same number of tokens. Answers left empty are each prompt's prediction.")
            with gr.Row():
                clean_box = gr.Textbox(pair[0], label="Clean prompt", elem_id="arch-clean", max_length=MAX_PROMPT_CHARS)
                corrupt_box = gr.Textbox(pair[1], label="Corrupted prompt", elem_id="arch-corrupt",
                                         max_length=MAX_PROMPT_CHARS)
            with gr.Row():
                clean_ans = gr.Textbox("", label="Clean answer (one token)", elem_id="arch-clean-answer",
                                       max_length=200, info="Empty: the model's prediction for the clean prompt.")
                corrupt_ans = gr.Textbox("", label="Corrupted answer (one token)", elem_id="arch-corrupt-answer",
                                         max_length=200, info="Empty: its prediction for the corrupted prompt.")
                site = gr.Radio(SITE_CHOICES, value="resid_pre", label="Patch", elem_id="arch-site")
            patch_btn = gr.Button("Patch", variant="primary", elem_id="arch-patch-run")
            patch_plot = gr.Plot(note_figure("Press Patch: how much of the clean answer each patch restores appears here."),
                                 label="Restored share of the clean answer", elem_id="arch-patch-map")
            patch_md = gr.Markdown("", elem_id="arch-patch-md")
        gr.on([patch_btn.click, clean_box.submit, corrupt_box.submit], patching,
              [clean_box, corrupt_box, site, clean_ans, corrupt_ans, ctx.model_name], [patch_plot, patch_md],
              api_name="activation_patching", concurrency_id=CPU_HEAVY)

        def new_pair(name, clean, corrupt):
            """Another model: a pair still at a default becomes the one that suits it."""
            if (clean, corrupt) not in PATCH_PAIRS:
                return gr.update(), gr.update(), gr.update(), gr.update()
            try:
                c, x = suitable_pair(get_bundle(name))
            except gr.Error:
                return gr.update(), gr.update(), gr.update(), gr.update()
            return c, x, None, ""
        ctx.model_changed.change(new_pair, [ctx.model_name, clean_box, corrupt_box],
                                 [clean_box, corrupt_box, patch_plot, patch_md], api_visibility="private")

        outputs = [config_md, diagram, params, totals_md, residual_plot, lens_plot, lens_table, lens_note,
                   ln_plot, ln_md, layer, dla_plot]
        # The trace is cached per (model, prompt): a control change only redraws.
        gr.on([run_btn.click, prompt.submit, layer.submit, position.submit, which.input, top_k.release],
              architecture, inputs, outputs, api_name="architecture",
              concurrency_id=CPU_HEAVY, trigger_mode="always_last")
        if small:
            on_first_open(tab, architecture, inputs, outputs, concurrency_id=CPU_HEAVY)
        ctx.model_changed.change(architecture, inputs, outputs, api_visibility="private",
                                 concurrency_id=CPU_HEAVY, trigger_mode="always_last")
        gr.on([preset.input, qkv.input], preset_counts, [preset, qkv], [preset_table, preset_md, preset_diagram],
              api_name="parameter_counts")

        examples = gr.Examples(
            [[DEFAULT_PROMPT, 3, 0, "norm1", -1],
             ["def add(a, b):\n    return a + b\n\nprint(add(2, 3))", 5, 0, "norm2", -1],
             ["The capital of France is Paris. The capital of Germany is", 5, 0, "final", -1]],
            inputs=[prompt, top_k, layer, which, position], elem_id="arch-examples",
            label="Try: a sentence, a bit of Python, a fact to recall")
        examples.load_input_event.then(architecture, inputs, outputs, api_visibility="private",
                                       concurrency_id=CPU_HEAVY)

        # One prompt for Attention and Architecture: typing in either updates the other.
        att = ctx.shared.get("attention")
        if att is not None:
            # In the browser alone (no round trip per keystroke), always the latest text.
            prompt.input(None, prompt, att["prompt"], js="(text) => text", trigger_mode="always_last")
            att["prompt"].input(None, att["prompt"], prompt, js="(text) => text", trigger_mode="always_last")
        linked = gr.State(False)
        tabs_out = ctx.tabs if ctx.tabs is not None else gr.State()
        gr.context.Context.root_block.load(
            prefill_from_url, ctx.model_name, [tabs_out, prompt, layer, position, linked],
            api_visibility="private").then(architecture_if_linked, [linked, *inputs], outputs,
                                           api_visibility="private", concurrency_id=CPU_HEAVY)
        ctx.shared["architecture"] = dict(prompt=prompt, position=position, layer=layer, inputs=inputs,
                                          outputs=outputs, run=architecture)
