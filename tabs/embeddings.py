"""Stage 3 · Embeddings: the token table as a map, neighbours, analogies, positions, and
token + position = input, as views of the active model's own weights."""
from __future__ import annotations


import gradio as gr
import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots
import torch

from llm_core import budget
from llm_core.views import embedding_view as emb_view
from llm_core.model import build_untrained
from llm_core.registry import model_choices
from tabs.common import CPU_HEAVY, check_int, check_text, friendly_errors, get_bundle
from tabs.figures import note_figure
from tabs.guard import owner_of, typed_model_name
from tabs.markup import md_code, md_text, plot_text

# Defaults are picked from these to suit the model's vocabulary (GPT-2's, or a small one of Python docs).
WORD_CANDIDATES = ("king, queen, man, woman, Paris, London, dog, cat, one, two, three, four, red, blue, def, "
                   "return, import, class, list, dict, True, None")
ANALOGY_CANDIDATES = [("king", "man", "woman"), ("two", "one", "three"), ("list", "append", "dict")]
QUERY_CANDIDATES = ["king", "two", "list", "#10"]
DEFAULT_SENTENCE = ("In the sunlit terraces of the palace, every effort moves you forward; "
                    "the model reads each token together with its position in the window.")
MAX_WORD_CHARS = 100
MAX_LIST_CHARS = 2_000
MAX_SENTENCE_CHARS = 5_000
DEFAULT_POINTS = 3_000
SVG_POINTS = 5_000          # more points than this are drawn with WebGL
REQUEST_CEILING = 10**9     # anything up to this is capped with a notice; beyond it is nonsense
HEATMAP_DIMS = 64           # columns of the token/position/input heatmaps
PRECOMPUTE_MAX_PARAMS = 40_000_000  # draw on first opening only for small models
UNTRAINED_TWIN = "__untrained_twin__"
BEFORE_CHOICE = ("the 'after' model before training (same config and tokenizer, random weights)", UNTRAINED_TWIN)
ACTIVE = "__active__"
ACTIVE_CHOICE = ("the active model", ACTIVE)

INTRO = """## 3 · Embeddings
A GPT starts by looking up two vectors for every input token: one for **the token** (a row of
`nn.Embedding(vocab_size, emb_dim)`) and one for **its position** in the window (a row of
`nn.Embedding(context_length, emb_dim)`). Their sum is what the first transformer block sees.
Everything below reads the active model's own tables; training is what gives them structure —
an untrained model's map is a round cloud."""

_twins: dict = {}  # one untrained twin per config, shared by all sessions


def _cap_points(n_points) -> int:
    n = check_int(n_points, "Points to plot", 2, REQUEST_CEILING)
    if n > emb_view.MAX_POINTS:
        gr.Warning(f"{n:,} points requested: showing {emb_view.MAX_POINTS:,}, the most a browser plots smoothly.")
    return min(n, emb_view.MAX_POINTS)


def _resolve(tok, word: str, n_vocab: int, what: str) -> emb_view.TokenMatch:
    check_text(word, what=what, max_chars=MAX_WORD_CHARS)
    try:
        return emb_view.resolve_token(tok, word, n_vocab)
    except emb_view.TokenNotFound as exc:
        raise gr.Error(f"{what.capitalize()}: {exc}", title="Not a single token") from None


def _resolve_list(tok, words_text: str, n_vocab: int) -> tuple[list[emb_view.TokenMatch], str]:
    words_text = check_text(words_text, what="token list", max_chars=MAX_LIST_CHARS, allow_empty=True)
    words = emb_view.parse_token_list(words_text)
    found, missing = emb_view.resolve_tokens(tok, words, n_vocab)
    lines = []
    if found:
        lines.append("Labelled: " + ", ".join(f"{md_code(m.label)} (#{m.id})" for m in found))
    if missing:
        split = "; ".join(f"{md_text(exc.query.strip())} → " + " + ".join(md_code(label) for _, label in exc.pieces)
                          if exc.pieces else f"{md_text(exc.query.strip())} ({md_text(exc)})" for exc in missing)
        lines.append(f"⚠️ Not single tokens of this vocabulary (byte-pair encoding splits words it has not "
                     f"merged into pieces), so not plotted: {split}. Use one of the pieces, or #id.")
    if len([w for w in words_text.split(",") if w.strip()]) > emb_view.MAX_CHOSEN:
        lines.append(f"Only the first {emb_view.MAX_CHOSEN} words are used.")
    return found, "\n\n".join(lines)


# ---------------------------------------------------------------- the projector

def projector_figure(proj: emb_view.Projection, title: str) -> go.Figure:
    dims = proj.coords.shape[1]
    chosen = np.zeros(len(proj.ids), dtype=bool)
    chosen[proj.chosen] = True
    hover = np.array([f"{plot_text(lbl)}  (#{i})" for lbl, i in zip(proj.labels, proj.ids.tolist())], dtype=object)
    labels = np.array([plot_text(lbl) for lbl in proj.labels], dtype=object)
    bg, fg = ~chosen, chosen
    axes = [f"PC{i + 1} ({100 * proj.explained[i]:.1f} % of variance)" for i in range(dims)]
    fig = go.Figure()
    if dims == 2:
        # WebGL only where SVG would be slow: it costs a lot in browsers without a GPU.
        scatter = go.Scattergl if len(proj.ids) > SVG_POINTS else go.Scatter
        fig.add_trace(scatter(x=proj.coords[bg, 0], y=proj.coords[bg, 1], mode="markers", name="tokens",
                                   hovertext=hover[bg], hoverinfo="text",
                                   marker=dict(size=4, opacity=0.45, color="#64748b")))
        fig.add_trace(go.Scatter(x=proj.coords[fg, 0], y=proj.coords[fg, 1], mode="markers+text", name="chosen",
                                 text=labels[fg], textposition="top center", hovertext=hover[fg],
                                 hoverinfo="text", marker=dict(size=10, color="#dc2626")))
        fig.update_layout(xaxis_title=axes[0], yaxis_title=axes[1])
    else:
        fig.add_trace(go.Scatter3d(x=proj.coords[bg, 0], y=proj.coords[bg, 1], z=proj.coords[bg, 2],
                                   mode="markers", name="tokens", hovertext=hover[bg], hoverinfo="text",
                                   marker=dict(size=2, opacity=0.4, color="#64748b")))
        fig.add_trace(go.Scatter3d(x=proj.coords[fg, 0], y=proj.coords[fg, 1], z=proj.coords[fg, 2],
                                   mode="markers+text", name="chosen", text=labels[fg], hovertext=hover[fg],
                                   hoverinfo="text", marker=dict(size=5, color="#dc2626")))
        fig.update_layout(scene=dict(xaxis_title="PC1", yaxis_title="PC2", zaxis_title="PC3"))
    fig.update_layout(title=title, height=620, margin=dict(l=10, r=10, t=50, b=10),
                      legend=dict(orientation="h", y=-0.05))
    return fig


@friendly_errors
def project(words_text, dims, n_points, model_name=None):
    """The token table on its principal components, chosen tokens labelled."""
    bundle = get_bundle(model_name)
    dims = {"2-D": 2, "3-D": 3}.get(dims, dims)
    if dims not in (2, 3, "2", "3"):
        raise gr.Error("Choose 2-D or 3-D.")
    n = _cap_points(n_points)
    n_vocab = emb_view.usable_vocab(bundle.model, bundle.tokenizer)
    found, note = _resolve_list(bundle.tokenizer, words_text, n_vocab)
    with torch.inference_mode():
        proj = emb_view.project_token_embeddings(bundle.model, bundle.tokenizer, [m.id for m in found],
                                           dims=int(dims), n_points=n)
    shown = f"{len(proj.ids):,} of {proj.vocab_points:,} tokens"
    total = float(proj.explained.sum()) * 100
    summary = (f"**{md_text(bundle.name)}**: {shown} on the first {int(dims)} principal components of the "
               f"{proj.vocab_points:,} × {bundle.model.tok_emb.weight.shape[1]} token table, which together "
               f"hold {total:.1f} % of its variance (the rest is in the other dimensions: points close here "
               f"may be far apart there — the neighbour search below uses every dimension).")
    if proj.notice:
        summary += f"\n\n{md_text(proj.notice)}"
    title = f"Token embeddings of {bundle.name} (PCA, {int(dims)}-D)"
    return projector_figure(proj, title), summary + ("\n\n" + note if note else "")


# ---------------------------------------------------------------- neighbours and analogies

def _neighbour_rows(items: list[emb_view.Neighbour]) -> list[list]:
    return [[rank, n.label, n.id, round(n.score, 4)] for rank, n in enumerate(items, 1)]


@friendly_errors
def neighbours(word, k, model_name=None):
    """Cosine nearest neighbours of one token (the token itself comes first)."""
    bundle = get_bundle(model_name)
    k = check_int(k, "Neighbours", 1, emb_view.MAX_NEIGHBOURS)
    n_vocab = emb_view.usable_vocab(bundle.model, bundle.tokenizer)
    match = _resolve(bundle.tokenizer, word, n_vocab, "token")
    with torch.inference_mode():
        result = emb_view.nearest_neighbours(bundle.model, bundle.tokenizer, match.id, k + 1)
    note = (f"{md_code(match.label)} is token #{match.id}. Rank 1 is the token itself (cosine 1); the rest "
            f"are the rows of the table pointing most nearly the same way, over all "
            f"{bundle.model.tok_emb.weight.shape[1]} dimensions.")
    return _neighbour_rows(result), note


@friendly_errors
def analogy(a, b, c, k, model_name=None):
    """a - b + c over unit vectors, nearest tokens by cosine, the three inputs excluded."""
    bundle = get_bundle(model_name)
    k = check_int(k, "Results", 1, emb_view.MAX_NEIGHBOURS)
    n_vocab = emb_view.usable_vocab(bundle.model, bundle.tokenizer)
    for word, what in ((a, "first word (a)"), (b, "word to subtract (b)"), (c, "word to add (c)")):
        _resolve(bundle.tokenizer, word, n_vocab, what)   # a clear message naming the bad word
    with torch.inference_mode():
        res = emb_view.analogy(bundle.model, bundle.tokenizer, a, b, c, k)
    inputs = ", ".join(f"{md_code(m.label)} {res.input_scores[m.id]:.3f}" for m in (res.a, res.b, res.c))
    note = (f"{md_code(res.a.label)} − {md_code(res.b.label)} + {md_code(res.c.label)} ≈ "
            f"{md_code(res.results[0].label)} (cosine {res.results[0].score:.3f}). The inputs are left out of the "
            f"answers; their own cosines with the target would be: {inputs}.\n\n"
            f"Be warned: analogies need embeddings trained on a lot of varied text. A small model trained on "
            f"a few megabytes — let alone an untrained one — mostly returns unrelated tokens; that says what "
            f"its table has (not) learned, not that the arithmetic is wrong. GPT-2's token table does better, "
            f"but it was never trained for analogies either.")
    return _neighbour_rows(res.results), note


# ---------------------------------------------------------------- positions

@friendly_errors
def positions(max_positions, model_name=None):
    """Cosine similarity between position vectors, and their principal components vs position."""
    bundle = get_bundle(model_name)
    context = bundle.config.context_length
    p = check_int(max_positions, "Positions", 2, REQUEST_CEILING)
    if p > min(context, emb_view.MAX_POSITIONS):
        gr.Warning(f"Showing {min(context, emb_view.MAX_POSITIONS)} positions: the model has {context:,}, and the "
                   f"heatmap stays at most {emb_view.MAX_POSITIONS} × {emb_view.MAX_POSITIONS} to remain readable.")
    with torch.inference_mode():
        sim = emb_view.positional_similarity(bundle.model, p)
        coords, explained = emb_view.positional_components(bundle.model, 3)
    n = sim.shape[0]
    heat = go.Figure(go.Heatmap(z=sim, x=np.arange(n), y=np.arange(n), zmin=-1, zmax=1, colorscale="RdBu",
                                reversescale=True, colorbar=dict(title="cosine"),
                                hovertemplate="position %{y} vs %{x}: %{z:.3f}<extra></extra>"))
    heat.update_layout(title=f"Cosine similarity between position vectors 0–{n - 1}", height=520,
                       xaxis_title="position", yaxis_title="position", yaxis_autorange="reversed",
                       margin=dict(l=10, r=10, t=50, b=10))
    pcs = go.Figure()
    x = np.arange(coords.shape[0])
    for i in range(coords.shape[1]):
        pcs.add_trace(go.Scatter(x=x, y=coords[:, i], mode="lines",
                                 name=f"PC{i + 1} ({100 * explained[i]:.1f} %)"))
    pcs.update_layout(title="The position table's first principal components, position by position", height=520,
                      xaxis_title="position", yaxis_title="component value", margin=dict(l=10, r=10, t=50, b=10),
                      legend=dict(orientation="h", y=-0.15))
    note = (f"{md_text(bundle.name)} has {context:,} learned position vectors of {bundle.config.emb_dim} numbers. "
            "Trained GPTs learn smooth waves along position (neighbouring positions get similar vectors, a bright "
            "band along the diagonal); random ones show only the diagonal.")
    return heat, pcs, note


# ---------------------------------------------------------------- token + position = input

def _shape(t) -> str:
    return "[" + ", ".join(str(x) for x in t) + "]"


def decomposition_markdown(out: emb_view.InputEmbedding, batch: int, length: int) -> str:
    s = out.shapes
    b, t, d = s["input embeddings"]
    rows = [
        ("token ids", s["token ids"], f"{b} windows × {t} tokens (stride {t}, no overlap)"),
        ("token embedding table", s["token embedding table"], "`tok_emb = nn.Embedding(vocab_size, emb_dim)`"),
        ("position embedding table", s["position embedding table"],
         "`pos_emb = nn.Embedding(context_length, emb_dim)`"),
        ("token embeddings", s["token embeddings"], "`tok_emb(ids)`: one row per token"),
        ("position embeddings", s["position embeddings"],
         f"`pos_emb(torch.arange({t}))`: the same for every window, broadcast over the batch"),
        ("input embeddings", s["input embeddings"], "token + position: what layer 0 receives"),
    ]
    table = "| tensor | shape | how |\n|---|---|---|\n" + "\n".join(
        f"| {name} | `{_shape(shape)}` | {how} |" for name, shape, how in rows)
    notes = []
    if (b, t) != (batch, length):
        notes.append(f"You asked for {batch} × {length}; the text has {out.text_tokens} tokens, so the batch is "
                     f"{b} × {t}. Paste a longer text for more windows.")
    if out.text_tokens > b * t:
        notes.append(f"The first {b * t} of the text's {out.text_tokens} tokens are used.")
    book = ("The book's example: batch 8, 4 tokens, emb_dim 256 → `[8, 4, 256]`. "
            f"Here: batch {b}, {t} tokens, emb_dim {d} → `{_shape(s['input embeddings'])}`.")
    return "\n\n".join([book, table, *notes])


def decomposition_figure(out: emb_view.InputEmbedding) -> go.Figure:
    d = out.tok_emb.shape[-1]
    cols = min(d, HEATMAP_DIMS)
    labels = [f"{i}: {plot_text(t)}" for i, t in enumerate(out.tokens[0])]
    parts = [("token embedding", out.tok_emb[0, :, :cols]), ("+ position embedding", out.pos_emb[:, :cols]),
             ("= input embedding", out.embed[0, :, :cols])]
    lim = float(max(np.abs(p).max() for _, p in parts)) or 1.0
    fig = make_subplots(rows=1, cols=3, subplot_titles=[name for name, _ in parts], shared_yaxes=True,
                        horizontal_spacing=0.03)
    rows = np.arange(len(labels))   # positions, labelled: a categorical axis would merge equal labels
    names = np.array([[lab] * cols for lab in labels], dtype=object)
    for i, (name, z) in enumerate(parts, 1):
        fig.add_trace(go.Heatmap(z=z.astype(np.float32), y=rows, customdata=names, zmin=-lim, zmax=lim,
                                 colorscale="RdBu", reversescale=True, showscale=i == 3, name=name,
                                 hovertemplate="%{customdata}<br>dimension %{x}: %{z:.3f}<extra>" + name + "</extra>"),
                      row=1, col=i)
    fig.update_yaxes(autorange="reversed", tickvals=list(rows), ticktext=labels)
    shown = f"first {cols} of {d} dimensions" if cols < d else f"all {d} dimensions"
    fig.update_layout(title=f"Window 1 of the batch ({shown})", height=max(260, 60 + 26 * len(labels)),
                      margin=dict(l=10, r=10, t=70, b=10))
    return fig


@friendly_errors
def input_embeddings(sentence, batch, length, model_name=None):
    """tok_emb(ids) + pos_emb(positions) for a batch of windows cut from a sentence, with shapes."""
    bundle = get_bundle(model_name)
    sentence = check_text(sentence, what="sentence", max_chars=MAX_SENTENCE_CHARS)
    batch = check_int(batch, "Batch size", 1, emb_view.MAX_BATCH)
    length = check_int(length, "Tokens per window", 1, bundle.config.context_length)
    with torch.inference_mode():
        out = emb_view.input_embedding(bundle.model, bundle.tokenizer, sentence, batch, length)
    rows = [[t, tok, int(i), *[round(float(v), 3) for v in (out.tok_emb[0, t, 0], out.pos_emb[t, 0],
                                                              out.embed[0, t, 0])]]
            for t, (tok, i) in enumerate(zip(out.tokens[0], out.ids[0].tolist()))]
    return decomposition_markdown(out, batch, length), decomposition_figure(out), rows


# ---------------------------------------------------------------- before vs after

def _untrained_twin(bundle):
    """The active model's architecture with random weights (cached per config)."""
    key = (bundle.config, str(bundle.model.device))
    if key not in _twins:
        _twins.clear()   # keep one: GPT-2 small's twin alone is 650 MB
        try:  # it counts against the server's memory budget like every other model
            with budget.reserve(bundle.config, what=f"An untrained twin of {bundle.name}"):
                _twins[key] = build_untrained(bundle.config).to(bundle.model.device)
        except budget.BudgetError as exc:
            raise gr.Error(str(exc)) from None
    return _twins[key]


def comparison_figure(cmp: emb_view.Comparison, before_name: str, after_name: str) -> go.Figure:
    fig = go.Figure()
    xs, ys = [], []
    for (x0, y0), (x1, y1) in zip(cmp.before_xy, cmp.after_xy):
        xs += [float(x0), float(x1), None]
        ys += [float(y0), float(y1), None]
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color="#94a3b8", width=1.5), name="moved",
                             hoverinfo="skip"))
    labels = [plot_text(m.label) for m in cmp.moves]
    fig.add_trace(go.Scatter(x=cmp.before_xy[:, 0], y=cmp.before_xy[:, 1], mode="markers", name=plot_text(before_name),
                             marker=dict(size=8, color="#94a3b8", symbol="circle-open"), hovertext=labels,
                             hoverinfo="text"))
    fig.add_trace(go.Scatter(x=cmp.after_xy[:, 0], y=cmp.after_xy[:, 1], mode="markers+text",
                             name=plot_text(after_name), text=labels, textposition="top center", hovertext=labels,
                             hoverinfo="text", marker=dict(size=10, color="#2563eb")))
    fig.update_layout(title="Chosen tokens: before (open circles) → after (labelled)", height=560,
                      xaxis_title=f"PC1 of {plot_text(after_name)} ({100 * cmp.explained[0]:.1f} %)",
                      yaxis_title=f"PC2 ({100 * cmp.explained[1]:.1f} %)", margin=dict(l=10, r=10, t=50, b=10),
                      legend=dict(orientation="h", y=-0.15))
    return fig


@friendly_errors
def compare(before_name, after_name, words_text, k, model_name=None, request: gr.Request = None):
    """How chosen tokens moved between two models with one tokenizer: before → after
    (after is the active model unless another is chosen)."""
    k = check_int(k, "Neighbours", 1, 20)
    if not before_name:
        raise gr.Error("Choose the model to compare with (the 'before').")
    before_name = typed_model_name(before_name, request, "'Before' model")
    if after_name not in (None, "", ACTIVE):
        after_name = typed_model_name(after_name, request, "'After' model")
    after = get_bundle(model_name if after_name in (None, "", ACTIVE) else after_name)
    if before_name == UNTRAINED_TWIN:
        before_model, before_tok, before_label = None, after.tokenizer, f"{after.name} before training"
    else:
        if before_name == after.name:
            raise gr.Error(f"'Before' and 'after' are both {after.name}: choose two different models, e.g. "
                           "'the same architecture before training'.")
        before = get_bundle(before_name)
        before_model, before_tok, before_label = before.model, before.tokenizer, before.name
        if not emb_view.same_tokenizer(before_tok, after.tokenizer):
            raise gr.Error(f"{before.name} uses the tokenizer '{before_tok.name}' ({before_tok.n_vocab:,} tokens) "
                           f"and {after.name} uses '{after.tokenizer.name}' ({after.tokenizer.n_vocab:,}): the same id "
                           "means different text, so there is nothing to compare. Pick a model with the same "
                           "tokenizer, or 'the active model before training'.", title="Different tokenizers")
    n_vocab = emb_view.usable_vocab(after.model, after.tokenizer)
    found, note = _resolve_list(after.tokenizer, words_text, n_vocab)
    if not found:
        raise gr.Error("None of the tokens to compare is a single token of this vocabulary: type a few "
                       "common words separated by commas.")
    if before_model is None:
        before_model = _untrained_twin(after)   # built outside inference mode: ordinary tensors
    with torch.inference_mode():
        cmp = emb_view.compare_embeddings(before_model, after.model, after.tokenizer, [m.id for m in found], k)
    rows = [[m.label, round(m.cosine, 3), f"{m.shared_neighbours}/{k}",
             " ".join(n.label for n in m.neighbours_before), " ".join(n.label for n in m.neighbours_after)]
            for m in cmp.moves]
    summary = (f"**Before:** {md_text(before_label)} · **after:** {md_text(after.name)}. The 'before' table is first "
               "rotated onto the 'after' one (orthogonal Procrustes over up to 20,000 tokens), because two "
               "models may store the same geometry in rotated axes; the movement that remains is real. A cosine "
               "near 1 means the token barely moved; near 0, it was rewritten. Neighbour lists need no alignment.")
    if before_name == UNTRAINED_TWIN and after.source == "untrained":
        summary += (" The active model is itself an untrained one with the same seed, so nothing moved: load a "
                    "trained model (or compare with another model) to see training at work.")
    elif before_name == UNTRAINED_TWIN:
        summary += (" The 'before' is a fresh random initialisation (seed 123), not necessarily the exact "
                    "starting point of this model's training.")
    return comparison_figure(cmp, before_label, after.name), rows, summary + ("\n\n" + note if note else "")


# ---------------------------------------------------------------- the tab

def _compare_choices(active: str | None = None, owner: str | None = None):
    return [BEFORE_CHOICE] + [(label, name) for label, name in model_choices(owner) if name != active]


def _after_choices(owner: str | None = None):
    return [ACTIVE_CHOICE] + model_choices(owner)


def _model_changed(name, request: gr.Request = None):
    """Offer the new active model's comparisons (the visitor's own runs among them) and clear the
    tables that answered for the previous model, saying why."""
    owner = owner_of(request)
    return (gr.update(choices=_compare_choices(name, owner), value=UNTRAINED_TWIN),
            gr.update(choices=_after_choices(owner), value=ACTIVE),
            None, f"Model changed to {md_code(name)}: press *Find neighbours*.",
            None, f"Model changed to {md_code(name)}: press *Solve the analogy*.")


def _defaults(model_name) -> dict:
    """Example words that are single tokens of this model's vocabulary."""
    try:
        bundle = get_bundle(model_name)
    except gr.Error:
        return {"words": WORD_CANDIDATES, "query": QUERY_CANDIDATES[0], "analogy": ANALOGY_CANDIDATES[0]}
    tok, n_vocab = bundle.tokenizer, emb_view.usable_vocab(bundle.model, bundle.tokenizer)

    def ok(word):
        # A whole word as it appears inside a sentence (' cat' as one token): a word that only
        # exists without its space ('cat' in a small vocabulary) is a piece, not the word.
        ids = tok.encode(" " + word)
        return len(ids) == 1 and ids[0] < n_vocab

    words = [w.strip() for w in WORD_CANDIDATES.split(",") if ok(w.strip())] or ["#10", "#11", "#12"]
    triple = next((t for t in ANALOGY_CANDIDATES if all(ok(w) for w in t)), ("#20", "#21", "#22"))
    query = next((q for q in QUERY_CANDIDATES if q.startswith("#") or ok(q)), "#10")
    return {"words": ", ".join(words), "query": query, "analogy": triple}


def first_view(drawn, words, n_points, query, k_nn, an_a, an_b, an_c, k_an, max_pos, sentence, in_batch, in_len,
               model_name):
    """Every view of the tab for its current inputs, once per session (models too large to
    draw quickly wait for a click)."""
    skip = (gr.skip(),) * 12
    if drawn:
        return (True, *skip)
    try:
        if get_bundle(model_name).num_parameters > PRECOMPUTE_MAX_PARAMS:
            return (True, *skip)
        return (True, *project(words, "2-D", n_points, model_name), *neighbours(query, k_nn, model_name),
                *analogy(an_a, an_b, an_c, k_an, model_name), *positions(max_pos, model_name),
                *input_embeddings(sentence, in_batch, in_len, model_name))
    except gr.Error:
        return (True, *skip)  # the page still works; the first click shows the reason


def build(ctx) -> None:
    init_model = ctx.model_name.value
    defaults = _defaults(init_model)
    initial = {}  # drawn when the tab is first opened (see first_view), not at start-up
    p0 = initial.get("project", (None, ""))
    pos0 = initial.get("positions", (None, None, ""))
    in0 = initial.get("input", ("", None, []))
    nn0 = initial.get("neighbours", (None, ""))
    an0 = initial.get("analogy", (None, ""))

    with gr.Tab("3 · Embeddings", id="embeddings", elem_id="tab-embeddings") as tab:
        gr.Markdown(INTRO)

        gr.Markdown("### The token table as a map")
        with gr.Row():
            with gr.Column(scale=1, min_width=280):
                words = gr.Textbox(defaults["words"], lines=3, label="Tokens to label", elem_id="emb-words",
                                   max_length=MAX_LIST_CHARS,
                                   info="Comma-separated words; a word is tried as ' word' (inside a sentence) "
                                        "then 'word'. #123 means token id 123. Always plotted and labelled.")
                dims = gr.Radio(["2-D", "3-D"], value="2-D", label="Dimensions", elem_id="emb-dims",
                                info="Principal components of the table (PCA): the directions along which the "
                                     "rows vary most.")
                n_points = gr.Number(DEFAULT_POINTS, precision=0, label="Points to plot", elem_id="emb-points",
                                     info=f"A random sample of the vocabulary plus your tokens; at most "
                                          f"{emb_view.MAX_POINTS:,}.")
                project_btn = gr.Button("Project the token table", variant="primary", elem_id="emb-project")
            with gr.Column(scale=3):
                scatter = gr.Plot(p0[0], label="Token embeddings (PCA)", elem_id="emb-scatter")
                project_note = gr.Markdown(p0[1], elem_id="emb-project-note")

        with gr.Row():
            with gr.Column():
                gr.Markdown("### Nearest neighbours")
                with gr.Row():
                    query = gr.Textbox(defaults["query"], label="Token", elem_id="emb-query", max_length=MAX_WORD_CHARS,
                                       info="A word or piece of a word (or #id).")
                    k_nn = gr.Number(10, precision=0, label="Neighbours", elem_id="emb-k",
                                     info=f"How many, 1–{emb_view.MAX_NEIGHBOURS}.")
                nn_btn = gr.Button("Find neighbours", elem_id="emb-nn-btn")
                nn_table = gr.Dataframe(nn0[0], headers=["rank", "token", "id", "cosine"], interactive=False,
                                        elem_id="emb-nn-table", max_height=380)
                nn_note = gr.Markdown(nn0[1], elem_id="emb-nn-note")
            with gr.Column():
                gr.Markdown("### Analogy: a − b + c")
                with gr.Row():
                    an_a = gr.Textbox(defaults["analogy"][0], label="a", elem_id="emb-an-a", max_length=MAX_WORD_CHARS,
                                      info="Start from this token…")
                    an_b = gr.Textbox(defaults["analogy"][1], label="− b", elem_id="emb-an-b",
                                      max_length=MAX_WORD_CHARS,
                                      info="…take this away…")
                    an_c = gr.Textbox(defaults["analogy"][2], label="+ c", elem_id="emb-an-c",
                                      max_length=MAX_WORD_CHARS,
                                      info="…and add this.")
                    k_an = gr.Number(10, precision=0, label="Results", elem_id="emb-an-k",
                                     info=f"1–{emb_view.MAX_NEIGHBOURS}.")
                an_btn = gr.Button("Solve the analogy", elem_id="emb-an-btn")
                an_table = gr.Dataframe(an0[0], headers=["rank", "token", "id", "cosine"], interactive=False,
                                        elem_id="emb-an-table", max_height=380)
                an_note = gr.Markdown(an0[1], elem_id="emb-an-note")

        gr.Markdown("### Positional embeddings")
        with gr.Row():
            max_pos = gr.Number(128, precision=0, label="Positions in the heatmap", elem_id="emb-positions",
                                info=f"The first N positions (at most {emb_view.MAX_POSITIONS} and the model's context).")
            pos_btn = gr.Button("Show positions", elem_id="emb-pos-btn")
        with gr.Row():
            pos_heat = gr.Plot(pos0[0], label="Position similarity", elem_id="emb-pos-heat")
            pos_pcs = gr.Plot(pos0[1], label="Principal components vs position", elem_id="emb-pos-pcs")
        pos_note = gr.Markdown(pos0[2], elem_id="emb-pos-note")

        gr.Markdown("### Token embedding + position embedding = input embedding")
        with gr.Row():
            sentence = gr.Textbox(DEFAULT_SENTENCE, lines=2, label="Text", elem_id="emb-sentence",
                                  max_length=MAX_SENTENCE_CHARS, scale=3,
                                  info="Cut into windows the way the data loader does (stride = window length).")
            in_batch = gr.Number(8, precision=0, label="Batch size", elem_id="emb-batch",
                                 info=f"Windows in the batch (1–{emb_view.MAX_BATCH}); the book uses 8.")
            in_len = gr.Number(4, precision=0, label="Tokens per window", elem_id="emb-length",
                               info="T, at most the model's context length; the book uses 4.")
        in_btn = gr.Button("Embed the text", elem_id="emb-in-btn")
        in_md = gr.Markdown(in0[0], elem_id="emb-in-shapes")
        in_fig = gr.Plot(in0[1], label="Window 1: token, position and input vectors", elem_id="emb-in-fig")
        in_table = gr.Dataframe(in0[2], headers=["position", "token", "id", "token[0]", "position[0]", "input[0]"],
                                interactive=False, elem_id="emb-in-table", max_height=300,
                                label="Window 1, dimension 0: token + position = input")

        gr.Markdown("### Before vs after: how training moved the tokens")
        with gr.Row():
            before = gr.Dropdown(_compare_choices(init_model), value=UNTRAINED_TWIN, label="Before",
                                 elem_id="emb-before", scale=2, allow_custom_value=True,
                                 info="Another model with the same tokenizer: an untrained one, the model "
                                      "before your further training, a saved run, or a directory.")
            after = gr.Dropdown(_after_choices(), value=ACTIVE, label="After", elem_id="emb-after", scale=2,
                                allow_custom_value=True,
                                info="Usually the active model (the one loaded above); any other works too.")
            cmp_words = gr.Textbox(", ".join(defaults["words"].split(", ")[:8]), label="Tokens",
                                   elem_id="emb-cmp-words", max_length=MAX_LIST_CHARS, scale=2,
                                   info="Comma-separated, as above.")
            cmp_k = gr.Number(5, precision=0, label="Neighbours", elem_id="emb-cmp-k",
                              info="Neighbours listed per model (1–20).")
        cmp_btn = gr.Button("Compare", elem_id="emb-cmp-btn")
        cmp_fig = gr.Plot(note_figure("Press Compare: how far each token moved between the two models appears here."),
                          label="Movement", elem_id="emb-cmp-fig")
        cmp_table = gr.Dataframe(headers=["token", "cosine before/after", "shared neighbours",
                                          "neighbours before", "neighbours after"], interactive=False,
                                 wrap=True, elem_id="emb-cmp-table", max_height=380)
        cmp_note = gr.Markdown(elem_id="emb-cmp-note")

        m = ctx.model_name
        project_event = dict(fn=project, inputs=[words, dims, n_points, m], outputs=[scatter, project_note],
                             concurrency_id=CPU_HEAVY)
        gr.on([project_btn.click, words.submit, dims.input], api_name="embeddings", trigger_mode="always_last",
              **project_event)
        gr.on([nn_btn.click, query.submit], neighbours, [query, k_nn, m], [nn_table, nn_note],
              api_name="embedding_neighbours", concurrency_id=CPU_HEAVY)
        gr.on([an_btn.click, an_a.submit, an_b.submit, an_c.submit], analogy, [an_a, an_b, an_c, k_an, m],
              [an_table, an_note], api_name="embedding_analogy", concurrency_id=CPU_HEAVY)
        gr.on([pos_btn.click, max_pos.submit], positions, [max_pos, m], [pos_heat, pos_pcs, pos_note],
              api_name="embedding_positions", concurrency_id=CPU_HEAVY)
        gr.on([in_btn.click, sentence.submit], input_embeddings, [sentence, in_batch, in_len, m],
              [in_md, in_fig, in_table], api_name="embedding_input", concurrency_id=CPU_HEAVY)
        cmp_btn.click(compare, [before, after, cmp_words, cmp_k, m], [cmp_fig, cmp_table, cmp_note],
                      api_name="embedding_compare", concurrency_id=CPU_HEAVY)

        # A newly loaded model: redraw its map and positions, offer the others for comparison.
        ctx.model_changed.change(api_visibility="private", trigger_mode="always_last", **project_event).then(
            positions, [max_pos, m], [pos_heat, pos_pcs, pos_note], api_visibility="private",
            concurrency_id=CPU_HEAVY).then(
            _model_changed,
            m, [before, after, nn_table, nn_note, an_table, an_note],
            api_visibility="private", queue=False)

        # The first time this session opens the tab: draw everything once (keeps start-up fast).
        drawn = gr.State(False)
        tab.select(first_view, [drawn, words, n_points, query, k_nn, an_a, an_b, an_c, k_an, max_pos, sentence,
                                in_batch, in_len, m],
                   [drawn, scatter, project_note, nn_table, nn_note, an_table, an_note, pos_heat, pos_pcs, pos_note,
                    in_md, in_fig, in_table], api_visibility="private", concurrency_id=CPU_HEAVY)

        examples = gr.Examples(
            [["one, two, three, four, five, six, seven, eight", "3-D", 8000, "two", "one", "three"],
             ["def, return, import, class, self, print, None, True", "2-D", 5000, "def", "function", "class"],
             ["king, queen, man, woman, prince, princess", "2-D", 5000, "king", "man", "woman"],
             ["Paris, France, London, England, Berlin, Germany", "2-D", 20000, "Paris", "France", "Germany"]],
            inputs=[words, dims, n_points, an_a, an_b, an_c], elem_id="emb-examples",
            label="Try: numbers, Python keywords, royalty and capitals (the last two need GPT-2's vocabulary). "
                  "Each fills the labels and the analogy, then draws both.")
        examples.load_input_event.then(api_visibility="private", **project_event).then(
            analogy, [an_a, an_b, an_c, k_an, m], [an_table, an_note], api_visibility="private",
            concurrency_id=CPU_HEAVY)
