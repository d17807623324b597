"""Stage 1 · Tokenizer explorer: text → tokens → ids, side by side, and BPE merge by merge."""
from __future__ import annotations


import gradio as gr
import numpy as np
import plotly.graph_objects as go

from llm_core.views import tokenize_view as tok_view
from llm_core.bpe import BPETrainResult, train_bpe
from llm_core.tokenizers import (CL100K, ENDOFTEXT, O200K, UNK, SimpleTokenizerV2, SpecialTokenError,
                                 available_tokenizers, get_named_tokenizer, gpt2_tokenizer)
from llm_core.views.token_text import hex_bytes, readable, readable_parts, show_text
from tabs.common import (CPU_HEAVY, MAX_TEXT_CHARS, check_choice, check_int, check_text, friendly_errors,
                         get_bundle, read_text_upload, share_link_js, share_link_row)
from tabs.figures import note_figure
from tabs.markup import html_text

BOOK_SENTENCE = "Hello, do you like tea? <|endoftext|> In the sunlit terraces of the palace."
# Our own little paragraph for the word-level tokenizer's vocabulary: it lacks "Hello" and
# "palace", so the book's sentence shows <|unk|> just as in the book.
DEFAULT_VOCAB_TEXT = (
    "In the sunlit garden of the old house, we sat on the terraces and drank tea. "
    "What do you like? I like tea, the quiet of the afternoon, the light on the stones and "
    "the smell of the rain. It was the last summer before the house was sold."
)
EXAMPLES = [
    [BOOK_SENTENCE, "gpt2", "simple"],
    ["Crème brûlée in Zürich 🍮, 東京で寿司を食べた 🍣, and a family 👨‍👩‍👧 "
     "(one picture, five code points).", "gpt2", "model"],
    ['def greet(name):\n    """Say hello."""\n    return f"Hello, {name}!"\n\nprint(greet(\'world\'))',
     "gpt2", "model"],
    ["In 2024, 1,234,567 people paid $3.14 each; 0.1 + 0.2 = 0.30000000000000004 and "
     "12345679 × 9 = 111111111.", "gpt2", "none"],
    ["<script>alert('tokens are text')</script> & <b>bold</b>", "gpt2", "none"],
]

NONE = "none"
# Short keys (used in the API and in share links) → what the picker shows.
BASE_CHOICES = {
    "gpt2": "GPT-2 BPE (tiktoken gpt2, 50,257 tokens)",
    "simple": "The book's SimpleTokenizerV2 (word-level, <|unk|>)",
    "model": "The active model's tokenizer",
    "cl100k": CL100K,
    "o200k": O200K,
    "bpe": "The BPE you trained below",
}
OPTIONAL_LABELS = {"cl100k": CL100K, "o200k": O200K}
SPECIAL_CHOICES = [
    (f"special token: {ENDOFTEXT} becomes one id", "allow"),
    ("plain text: spelled with ordinary tokens", "plain"),
    ("refuse: report an error (tiktoken's default)", "refuse"),
]
WS_CHOICES = [("as typed", "typed"), ("markers ␣ ↵ ⇥", "markers"), ("GPT-2 vocab form (Ġ Ċ)", "gpt2")]
VOCAB_SOURCES = [("this text (everything is known)", "input"), ("the vocabulary text below", "other")]

DISPLAY_TOKENS = 2_000     # tokens drawn as coloured spans (counts and ids always cover all)
JSON_TOKENS = 2_000        # token records in the JSON output
JSON_IDS = 2_000           # ids in the JSON (a browser JSON tree stalls on tens of thousands); all ids go to a text box
REPLAY_CHARS = 5_000       # characters of the text segmented by the merge replay
MAX_MERGES = 5_000         # merges the step-by-step trainer learns at most
TRAIN_TIME_LIMIT_S = 30.0
N_COLOURS = 8

# Hovering a token or an id lights up its partner (and, faintly, every other use of the id).
HOVER_JS = """
const light = (e, on) => {
  const t = e.target.closest('[data-i]');
  if (!t || !element.contains(t)) return;
  const box = t.closest('.tkv');
  box.querySelectorAll('[data-i="' + t.dataset.i + '"]').forEach(x => x.classList.toggle('tkv-hl', on));
  box.querySelectorAll('[data-id="' + t.dataset.id + '"]').forEach(x => x.classList.toggle('tkv-same', on));
  const info = box.querySelector('.tkv-info');
  if (info) info.textContent = on ? t.getAttribute('title') : info.dataset.idle;
};
element.addEventListener('mouseover', e => light(e, true));
element.addEventListener('mouseout', e => light(e, false));
"""

GPT2_LEGEND = ("GPT-2 vocab form: byte-level BPE works on bytes, and GPT-2's vocabulary file writes "
               "each byte as a printable character. Visible Latin-1 bytes stand for themselves; the "
               "68 others are moved to U+0100 onwards, so a space (0x20) is Ġ, a newline (0x0A) Ċ, a "
               "tab (0x09) ĉ, and é (bytes C3 A9) reads Ã©. 'Ġthe' is simply ' the'.")


# ---------------------------------------------------------------- choosing tokenizers

def tokenizer_choices(include_none: bool = False) -> list[tuple[str, str]]:
    """Picker entries; cl100k/o200k stay listed with '(unavailable)' when they cannot load."""
    reasons = available_tokenizers()
    out = [(NONE_LABEL, NONE)] if include_none else []
    for key, label in BASE_CHOICES.items():
        if key in OPTIONAL_LABELS and reasons.get(OPTIONAL_LABELS[key]):
            label += " — unavailable (see note)"
        out.append((label, key))
    return out


NONE_LABEL = "— none —"


def availability_note() -> str:
    """One short line for tokenizers that cannot load here (the full reason comes on picking one)."""
    missing = [f"**{label}** ({reason.split(': ', 1)[0]})" for label, reason in available_tokenizers().items()
               if reason]
    if not missing:
        return ""
    return "Listed but not available here: " + "; ".join(missing) + "."


def resolve_tokenizer(key: str, text: str, model_name: str | None, vocab_source: str, vocab_text: str,
                      bpe_state: dict | None):
    """(tokenizer, display name) for a picker key; gr.Error when it cannot be had."""
    if key == "gpt2":
        return gpt2_tokenizer(), BASE_CHOICES["gpt2"]
    if key in OPTIONAL_LABELS:
        try:
            tok = get_named_tokenizer(OPTIONAL_LABELS[key])
        except RuntimeError as exc:
            raise gr.Error(f"{OPTIONAL_LABELS[key]} is not available: {exc}. Pick GPT-2 BPE or the "
                           "active model's tokenizer instead.") from None
        return tok, OPTIONAL_LABELS[key]
    if key == "model":
        bundle = get_bundle(model_name)
        tok = bundle.tokenizer
        return tok, f"{bundle.name}'s tokenizer ({tok.name}, {tok.n_vocab:,} tokens)"
    if key == "simple":
        if vocab_source == "other":
            source = check_text(vocab_text, what="vocabulary text")
            where = "the vocabulary text"
        elif vocab_source == "input":
            source, where = text, "this text"
        else:
            raise gr.Error(f"Vocabulary source must be 'input' or 'other' (got {vocab_source!r}).")
        tok = SimpleTokenizerV2.from_text(source)
        return tok, f"SimpleTokenizerV2 (vocabulary of {tok.n_vocab:,} from {where})"
    if key == "bpe":
        if not bpe_state:
            raise gr.Error("No BPE trained yet: train one in 'BPE merges, step by step' below, "
                           "then pick it again.")
        result = BPETrainResult.from_dict(bpe_state)
        return (result.to_tokenizer(f"bpe-{result.num_merges}"),
                f"Your BPE ({result.num_merges:,} merges, {result.n_vocab:,} tokens)")
    raise gr.Error(f"Unknown tokenizer {key!r}: use one of {', '.join(BASE_CHOICES)}.")


# ---------------------------------------------------------------- drawing tokens

def _ws_text(text: str, ws: str) -> str:
    """Text in the token view: whitespace marked (``markers``) with the line breaks kept, or as typed."""
    return show_text(text, "marked" if ws == "markers" else "typed", line_breaks=True)


def _token_inner(tok: tok_view.TokenPiece, ws: str) -> str:
    """The visible text of one token (escaped), partial-character bytes as <0xE6>."""
    if tok.unknown:
        return html_text(UNK) + f'<span class="tkv-b"> {html_text(show_text(tok.raw.decode("utf-8"), "typed"))}</span>'
    if ws == "gpt2":
        return html_text(tok.gpt2_form)
    out = []
    for kind, value in readable_parts(tok.raw):
        if kind == "text":
            out.append(html_text(_ws_text(value, ws)))
        else:
            out.append(f'<span class="tkv-b">{html_text(hex_bytes(value))}</span>')
    return "".join(out)


def _token_span(tok: tok_view.TokenPiece, ws: str, extra_class: str = "") -> str:
    classes = [f"tkv-t c{tok.index % N_COLOURS}"]
    if tok.special:
        classes.append("tkv-special")
    if tok.unknown:
        classes.append("tkv-unk")
    if extra_class:
        classes.append(extra_class)
    info = tok.describe()
    return (f'<span class="{" ".join(classes)}" data-i="{tok.index}" data-id="{tok.id}" '
            f'title="{html_text(info)}">{_token_inner(tok, ws)}</span>')


def render_tokens(tz: tok_view.Tokenization, ws: str, limit: int = DISPLAY_TOKENS, highlight: bytes | None = None) -> str:
    """Coloured spans for the first ``limit`` tokens, with the text between word-level
    tokens greyed out and partial-character tokens bracketed with the character they form."""
    parts = []
    text = tz.text
    shown = 0
    char_pos = 0
    for group in tz.groups(limit):
        if shown >= limit:
            break
        first = group[0]
        if first.char_start > char_pos:   # text no token covers (the simple tokenizer drops spaces)
            gap = text[char_pos:first.char_start]
            parts.append(f'<span class="tkv-gap" title="not part of any token">{html_text(_ws_text(gap, ws if ws != "gpt2" else "markers"))}</span>')
        spans = "".join(_token_span(t, ws, "tkv-new" if highlight is not None and t.raw == highlight else "")
                        for t in group)
        shown += len(group)
        if len(group) > 1:
            chars = text[first.char_start:group[-1].char_end]
            title = f"{len(group)} tokens together make {chars!r}"
            parts.append(f'<span class="tkv-g" title="{html_text(title)}">{spans}'
                         f'<span class="tkv-gc">={html_text(_ws_text(chars, "markers"))}</span></span>')
        else:
            parts.append(spans)
        char_pos = group[-1].char_end
    if shown >= len(tz.tokens) and char_pos < len(text):
        parts.append(f'<span class="tkv-gap">{html_text(_ws_text(text[char_pos:], ws if ws != "gpt2" else "markers"))}</span>')
    return "".join(parts)


def render_ids(tz: tok_view.Tokenization, limit: int = DISPLAY_TOKENS) -> str:
    chips = [f'<span class="tkv-id c{t.index % N_COLOURS}" data-i="{t.index}" data-id="{t.id}" '
             f'title="{html_text(t.describe())}">{t.id}</span>' for t in tz.tokens[:limit]]
    more = f" … and {len(tz.ids) - limit:,} more (all ids are in the data below)" if len(tz.ids) > limit else ""
    return "[" + ", ".join(chips) + "]" + html_text(more)


def render_view(tz: tok_view.Tokenization, tokenizer, ws: str, other_count: int | None = None) -> str:
    word_level = isinstance(tokenizer, SimpleTokenizerV2)
    if ws == "gpt2" and word_level:
        ws = "markers"  # words are not byte sequences: GPT-2's byte alphabet does not apply
    c = tz.counts()
    cpt = f"{c['chars_per_token']:.2f}" if c["chars_per_token"] is not None else "–"
    diff = ""
    if other_count is not None:
        delta = c["tokens"] - other_count
        diff = f" ({'+' if delta >= 0 else ''}{delta:,} vs the left)"
    if tz.round_trip_ok:
        rt = '<span class="tkv-ok tkv-rt">decode(encode(text)) == text ✓</span>'
    else:
        at = tz.first_mismatch
        snippet = tz.decoded[max(0, at - 20):at + 60]
        rt = (f'<span class="tkv-bad tkv-rt" title="{html_text(tz.decoded[:2000])}">round trip differs at character '
              f'{at:,}: decoded “…{html_text(_ws_text(snippet, "markers"))}…” ✗</span>')
    head = (f'<div class="tkv-head"><span class="tkv-name">{html_text(tz.tokenizer)}</span>'
            f'<span class="tkv-count"><b>{c["tokens"]:,}</b> tokens{html_text(diff)}</span>'
            f'<span>{c["characters"]:,} characters · {c["bytes"]:,} bytes · {cpt} characters/token · '
            f'{c["distinct_tokens"]:,} distinct</span>{rt}</div>')
    notes = tz.notes
    notes_html = ("<ul class='tkv-notes'>" + "".join(f"<li>{html_text(n)}</li>" for n in notes) + "</ul>") if notes else ""
    cut = (f'<div class="tkv-legend">Showing the first {DISPLAY_TOKENS:,} of {c["tokens"]:,} tokens; '
           "the counts cover the whole text.</div>") if c["tokens"] > DISPLAY_TOKENS else ""
    legend = f'<div class="tkv-legend">{html_text(GPT2_LEGEND)}</div>' if ws == "gpt2" else ""
    if word_level and ws == "markers":
        legend = '<div class="tkv-legend">Markers: ␣ space, ↵ newline, ⇥ tab (greyed: dropped by the tokenizer).</div>'
    elif ws == "markers":
        legend = '<div class="tkv-legend">Markers: ␣ space, ↵ newline, ⇥ tab. Word tokens usually carry the space before them.</div>'
    idle = "Hover a token or an id to see its partner, its bytes and its id."
    return (f'<div class="tkv" data-ws="{html_text(ws)}">{head}{notes_html}'
            f'<div class="tkv-text">{render_tokens(tz, ws)}</div>{cut}{legend}'
            f'<div class="tkv-info" data-idle="{html_text(idle)}">{html_text(idle)}</div>'
            f'<div class="tkv-ids">{render_ids(tz)}</div></div>')


def as_json(tz: tok_view.Tokenization) -> dict:
    return {
        "tokenizer": tz.tokenizer,
        "special": tz.special_mode,
        "counts": tz.counts(),
        "round_trip_ok": tz.round_trip_ok,
        "decoded": tz.decoded if len(tz.decoded) <= 5_000 else tz.decoded[:5_000] + "…",
        "ids": tz.ids[:JSON_IDS],
        "ids_truncated": len(tz.ids) > JSON_IDS,
        "tokens": tz.records(JSON_TOKENS),
        "tokens_truncated": len(tz.tokens) > JSON_TOKENS,
    }


# ---------------------------------------------------------------- the main event

def _clean_text(text) -> str:
    text = check_text(text)
    try:
        tok_view.check_unicode(text)
    except ValueError as exc:
        raise gr.Error(f"The text cannot be tokenized: {exc}. Paste it again from its source.") from None
    return text


def tokenize_one(key: str, text: str, special: str, ws: str, model_name, vocab_source, vocab_text,
                 bpe_state, other_count: int | None = None) -> tuple[dict, str, str]:
    tokenizer, name = resolve_tokenizer(key, text, model_name, vocab_source, vocab_text, bpe_state)
    try:
        tz = tok_view.tokenize(tokenizer, text, special=special, name=name)
    except SpecialTokenError as exc:
        raise gr.Error(f"{name}: {exc}. The 'special token literals' setting is 'refuse'; choose "
                       "'special token' to encode it as one id, or 'plain text' to spell it out.") from None
    return as_json(tz), render_view(tz, tokenizer, ws, other_count), ", ".join(map(str, tz.ids))


@friendly_errors
def tokenize_event(text, tok_a, tok_b, special, ws, vocab_source, vocab_text,
                   model_name=None, bpe_state=None):
    """Tokenize the text with one or two tokenizers.

    Returns JSON A, HTML A, JSON B, HTML B, all ids of A, all ids of B (B empty without a
    second tokenizer). The JSON holds the ids, counts and the tokens (id, string, byte span)."""
    text = _clean_text(text)
    check_choice(tok_a, list(BASE_CHOICES), "Tokenizer")
    check_choice(tok_b or NONE, [NONE, *BASE_CHOICES], "Compare with")
    check_choice(special, tok_view.SPECIAL_MODES, "Special-token literals")
    check_choice(ws, [v for _, v in WS_CHOICES], "Whitespace display")
    common = (special, ws, model_name, vocab_source, vocab_text, bpe_state)
    json_a, html_a, ids_a = tokenize_one(tok_a, text, *common)
    if not tok_b or tok_b == NONE:
        return json_a, html_a, None, "", ids_a, ""
    json_b, html_b, ids_b = tokenize_one(tok_b, text, *common, other_count=json_a["counts"]["tokens"])
    return json_a, html_a, json_b, html_b, ids_a, ids_b


EMPTY_VIEW = "<p class='tkv-empty'><i>Type or paste some text above to see its tokens.</i></p>"


def tokenize_live(text, *rest):
    """tokenize_event for edits as they happen: an emptied text box is a note in place of the
    tokens, not an error (the Tokenize button and the API still report it)."""
    if not (text or "").strip():
        return None, EMPTY_VIEW, None, "", "", ""
    return tokenize_event(text, *rest)


# ---------------------------------------------------------------- share links

def prefill_from_url(request: gr.Request):
    """?text=…&tokenizer=gpt2&compare=simple&special=plain&ws=markers → the tab's inputs."""
    params = dict(request.query_params) if request is not None else {}
    keep = gr.update()
    out = [keep] * 5
    text = params.get("text")
    if text is not None:
        if len(text) > MAX_TEXT_CHARS:
            gr.Warning(f"The link's text has {len(text):,} characters; the limit is {MAX_TEXT_CHARS:,}. Ignored it.")
        elif text.strip():
            out[0] = text
    for slot, name, allowed in ((1, "tokenizer", list(BASE_CHOICES)), (2, "compare", [NONE, *BASE_CHOICES]),
                                (3, "special", list(tok_view.SPECIAL_MODES)), (4, "ws", [v for _, v in WS_CHOICES])):
        value = params.get(name)
        if value is None:
            continue
        if value in allowed:
            out[slot] = value
        else:
            gr.Warning(f"The link asks for {name}={value!r}; known values: {', '.join(allowed)}. Ignored it.")
    return out


SHARE_JS = share_link_js("text, tok, cmp, special, ws", """\
  p.set('text', text || '');
  p.set('tokenizer', tok);
  if (cmp && cmp !== 'none') p.set('compare', cmp);
  if (special !== 'allow') p.set('special', special);
  if (ws !== 'typed') p.set('ws', ws);""")


# ---------------------------------------------------------------- BPE merges, step by step

def _read_upload(upload) -> str:
    return check_text(read_text_upload(upload), what="uploaded file")


def _pretty(raw: bytes) -> str:
    return show_text(readable(raw))


def merge_table(result: BPETrainResult) -> list[list]:
    return [[m.rank, _pretty(m.left), _pretty(m.right), _pretty(m.new), m.count] for m in result.merges]


def growth_figure(result: BPETrainResult) -> go.Figure:
    steps = np.arange(result.num_merges + 1, dtype=np.float32)
    tokens = np.asarray(result.training_token_counts(), dtype=np.float32)
    vocab = np.asarray([256, *result.vocab_growth()], dtype=np.float32)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=steps, y=tokens, name="tokens in the training text", mode="lines"))
    fig.add_trace(go.Scatter(x=steps, y=vocab, name="vocabulary size (bytes + merges)", mode="lines", yaxis="y2"))
    fig.update_layout(height=320, margin=dict(l=50, r=50, t=30, b=40), xaxis_title="merges learned",
                      yaxis=dict(title="tokens in the text"), yaxis2=dict(title="vocabulary", overlaying="y", side="right"),
                      legend=dict(orientation="h", y=1.12))
    return fig


@friendly_errors
def train_event(source, upload, n_merges, text, progress=gr.Progress()):
    """Learn byte-level BPE merges from the text (or a file), recording every merge."""
    n = check_int(n_merges, "Merges to learn", 1, MAX_MERGES)
    if source == "file":
        corpus, where = _read_upload(upload), "the uploaded file"
    elif source == "input":
        corpus, where = _clean_text(text), "the text above"
    else:
        raise gr.Error(f"Train on must be 'input' or 'file' (got {source!r}).")
    try:
        result = train_bpe(corpus, num_merges=n, time_limit_s=TRAIN_TIME_LIMIT_S,
                           progress=lambda done, total: progress(done / max(total, 1), desc="merging"))
    except ValueError as exc:
        raise gr.Error(f"Cannot train on {where}: {exc}.") from None
    if result.num_merges == 0:
        raise gr.Error(f"No pair of tokens occurs {result.min_count} or more times in {where}: nothing to "
                       "merge. Give it more (or more repetitive) text.")
    why = result.stopped_because
    if result.num_merges < n:
        why += (f" — a pair must occur at least {result.min_count} times to be merged, "
                "so a short text runs out of merges; give it more text")
    status = (f"Learned **{result.num_merges:,}** merges from {where} ({result.n_chars:,} characters, "
              f"{result.n_bytes:,} bytes) in {result.seconds:.2f} s; stopped: {why}. The vocabulary is now "
              f"{result.n_vocab:,} tokens (256 bytes + {result.num_merges:,} merges + {ENDOFTEXT}). "
              "Move the slider to replay the merges.")
    state = result.to_dict()
    replay = replay_view(state, result.num_merges, text if source == "input" else corpus)
    return (status, state, gr.update(maximum=result.num_merges, value=result.num_merges, interactive=True),
            merge_table(result), growth_figure(result), replay)


def replay_view(state: dict | None, step, text) -> str:
    if not state:
        raise gr.Error("Train a BPE first (the 'Learn merges' button).")
    result = BPETrainResult.from_dict(state)
    k = check_int(step, "Replay step", 0, result.num_merges)
    text = check_text(text, what="text to segment")
    sample = text[:REPLAY_CHARS]
    raws = result.segment(sample, k)
    ids = result.segment_ids(sample, k)
    tz = tok_view.Tokenization(text=sample, tokenizer=f"after {k:,} merges", ids=ids,
                         tokens=tok_view.byte_level_pieces(sample, ids, raw_tokens=raws,
                                                     special_ids={256 + k}),
                         decoded=b"".join(raws).decode("utf-8", errors="replace"))
    before = len(sample.encode("utf-8"))
    if k == 0:
        step_line = "Step 0: no merges yet, every byte is its own token."
        highlight = None
    else:
        m = result.merges[k - 1]
        step_line = (f"Merge {k:,} (new id {m.rank}): “{_pretty(m.left)}” + “{_pretty(m.right)}” → "
                     f"“{_pretty(m.new)}”, seen {m.count:,} times in the training text. Its uses are outlined in blue.")
        highlight = m.new
    cut = f" (the first {REPLAY_CHARS:,} characters)" if len(text) > REPLAY_CHARS else ""
    head = (f'<div class="tkv-head"><span class="tkv-name">{html_text(step_line)}</span>'
            f'<span class="tkv-count"><b>{len(ids):,}</b> tokens{html_text(cut)}, from {before:,} bytes '
            f'({before / max(len(ids), 1):.2f} bytes/token)</span></div>')
    idle = "Hover a token to see its id and bytes."
    return (f'<div class="tkv">{head}<div class="tkv-text">{render_tokens(tz, "markers", highlight=highlight)}</div>'
            f'<div class="tkv-info" data-idle="{html_text(idle)}">{html_text(idle)}</div></div>')


@friendly_errors
def replay_event(state, step, source, upload, text):
    if source == "file" and upload:
        text = _read_upload(upload)
    return replay_view(state, step, text)


# ---------------------------------------------------------------- the tab

def _initial_view() -> tuple[dict, str, str]:
    """What the page shows before any event: the book's sentence through GPT-2."""
    return tokenize_one("gpt2", BOOK_SENTENCE, "allow", "typed", None, "other", DEFAULT_VOCAB_TEXT, None)


def build(ctx) -> None:
    with gr.Tab("1 · Tokenizer", id="tokenizer", elem_id="tab-tokenizer"):
        gr.Markdown(
            "A model never sees letters: a **tokenizer** cuts text into tokens and gives each an id. "
            "GPT-2 uses **byte-level BPE**: start from the 256 bytes, merge frequent pairs into "
            "longer tokens. Hover a token to find its id (and back). Try the examples, compare two "
            "tokenizers, and train your own BPE at the bottom.")
        with gr.Row():
            with gr.Column(scale=3):
                text = gr.Textbox(value=BOOK_SENTENCE, lines=4, max_lines=14, label="Text",
                                  max_length=MAX_TEXT_CHARS, elem_id="tok-text",
                                  info=f"Anything: prose, code, emoji, CJK. Up to {MAX_TEXT_CHARS:,} characters.")
            with gr.Column(scale=2):
                tok_a = gr.Dropdown(tokenizer_choices(), value="gpt2", label="Tokenizer", elem_id="tok-a",
                                    info="GPT-2's BPE, the book's word-level tokenizer, the active model's own, "
                                         "or a BPE you train below.")
                tok_b = gr.Dropdown(tokenizer_choices(include_none=True), value=NONE, label="Compare with",
                                    elem_id="tok-b", info="A second tokenizer on the same text, side by side.")
        with gr.Row():
            special = gr.Radio(SPECIAL_CHOICES, value="allow", label=f"Special-token literals like {ENDOFTEXT}",
                               elem_id="tok-special", scale=3,
                               info="What happens when the text itself contains the special token's spelling.")
            ws = gr.Radio(WS_CHOICES, value="typed", label="Show whitespace", elem_id="tok-ws", scale=2,
                          info="Markers make spaces and newlines visible; GPT-2 vocab form shows the Ġ "
                               "(space) and Ċ (newline) you see in vocab.json files.")
        go_btn = gr.Button("Tokenize", variant="primary", elem_id="tok-go")
        bpe_state = gr.State(None)

        init_json, init_html, init_ids = _initial_view()
        with gr.Row(equal_height=False):
            with gr.Column():
                view_a = gr.HTML(init_html, elem_id="tok-view-a", js_on_load=HOVER_JS)
            with gr.Column(visible=False) as col_b:
                view_b = gr.HTML("", elem_id="tok-view-b", js_on_load=HOVER_JS)
        note = availability_note()
        gr.Markdown(note, visible=bool(note), elem_id="tok-availability")
        gr.Examples(EXAMPLES, inputs=[text, tok_a, tok_b], label="Examples (text, tokenizer, compare with)",
                    elem_id="tok-examples")
        with gr.Accordion("Vocabulary of the book's simple tokenizer", open=False, elem_id="tok-vocab"):
            vocab_source = gr.Radio(VOCAB_SOURCES, value="other", label="Build the vocabulary from",
                                    elem_id="tok-vocab-source",
                                    info="The book builds it from a training text (The Verdict); words outside "
                                         "it become <|unk|>. From this text, nothing is unknown.")
            vocab_text = gr.Textbox(DEFAULT_VOCAB_TEXT, lines=3, label="Vocabulary text", elem_id="tok-vocab-text",
                                    max_length=MAX_TEXT_CHARS, info="Sorted distinct words + <|endoftext|> + <|unk|>.")
        with gr.Accordion("Tokens as data (id, string, byte span)", open=False, elem_id="tok-data"):
            with gr.Row():
                with gr.Column():
                    json_a = gr.JSON(init_json, label="Tokenizer", elem_id="tok-json-a")
                    ids_a = gr.Textbox(init_ids, label="All ids", lines=2, max_lines=6, elem_id="tok-ids-a",
                                       buttons=["copy"], interactive=False)
                with gr.Column():
                    json_b = gr.JSON(None, label="Compare with", elem_id="tok-json-b")
                    ids_b = gr.Textbox("", label="All ids", lines=2, max_lines=6, elem_id="tok-ids-b",
                                       buttons=["copy"], interactive=False)
        share_btn, share_url = share_link_row("tok", "Text and choices travel in the URL (?text=…&tokenizer=…); "
                                                     "long texts make long links.")

        with gr.Accordion("BPE merges, step by step", open=True, elem_id="tok-bpe"):
            gr.Markdown(
                "Train a byte-level BPE, GPT-2 style: split the text into word-like chunks, start with "
                "the 256 bytes as tokens, then merge the most frequent adjacent pair into a new token, "
                "again and again. Every merge is recorded; the slider replays them on your text.")
            with gr.Row():
                bpe_source = gr.Radio([("the text above", "input"), ("an uploaded .txt file", "file")],
                                      value="input", label="Train on", elem_id="bpe-source",
                                      info="More text gives more (and more meaningful) merges.")
                bpe_file = gr.File(label="Text file (UTF-8)", file_types=[".txt"], type="filepath",
                                   elem_id="bpe-file")
                n_merges = gr.Slider(1, MAX_MERGES, value=200, step=1, label="Merges to learn", elem_id="bpe-n",
                                     info="Each merge adds one token to the vocabulary (GPT-2 learned 50,000).")
            train_btn = gr.Button("Learn merges", variant="primary", elem_id="bpe-train")
            bpe_status = gr.Markdown("", elem_id="bpe-status")
            replay = gr.Slider(0, 1, value=0, step=1, label="Replay: merges applied", elem_id="bpe-replay",
                               interactive=False,
                               info="0 = raw bytes. Slide right to apply merges in the order they were learned.")
            replay_html = gr.HTML("", elem_id="bpe-view", js_on_load=HOVER_JS)
            with gr.Row():
                table = gr.Dataframe(headers=["id", "left", "right", "new token", "count"],
                                     datatype=["number", "str", "str", "str", "number"], label="Merge table",
                                     interactive=False, max_height=360, elem_id="bpe-table")
                growth = gr.Plot(note_figure("Press Learn merges: the vocabulary's growth, merge by merge, appears here."),
                                 label="Vocabulary growth", elem_id="bpe-growth")

        # Events -------------------------------------------------------------
        inputs = [text, tok_a, tok_b, special, ws, vocab_source, vocab_text, ctx.model_name, bpe_state]
        outputs = [json_a, view_a, json_b, view_b, ids_a, ids_b]
        go_btn.click(tokenize_event, inputs, outputs, api_name="tokenize", trigger_mode="always_last",
                     show_progress="minimal")
        gr.on([text.change, tok_a.change, tok_b.change, special.change, ws.change,
               vocab_source.change, vocab_text.change, ctx.model_changed.change],
              tokenize_live, inputs, outputs, api_visibility="private", trigger_mode="always_last",
              show_progress="minimal")
        tok_b.change(lambda b: gr.update(visible=b not in (None, NONE)), tok_b, col_b,
                     api_visibility="private", queue=False)
        share_btn.click(None, [text, tok_a, tok_b, special, ws], share_url, js=SHARE_JS)

        root = gr.context.Context.root_block
        root.load(prefill_from_url, None, [text, tok_a, tok_b, special, ws], api_visibility="private")

        train_btn.click(train_event, [bpe_source, bpe_file, n_merges, text],
                        [bpe_status, bpe_state, replay, table, growth, replay_html],
                        api_name="train_bpe", concurrency_id=CPU_HEAVY, show_progress_on=[bpe_status])
        replay.change(replay_event, [bpe_state, replay, bpe_source, bpe_file, text], replay_html,
                      api_visibility="private", trigger_mode="always_last", show_progress="hidden")
