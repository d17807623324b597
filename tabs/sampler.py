"""Stage 2 · Data sampling: the book's sliding windows (GPTDatasetV1, create_dataloader_v1).

Everything shown comes from the dataset and the dataloader themselves: the tab only
reads ``dataset.starts``, ``dataset[i]`` and the loader's batches and draws them.
"""
from __future__ import annotations

import gradio as gr
from llm_core import corpus
from llm_core.views.sampling_view import Sampling, compute
from llm_core.tokenizers import GPT2, gpt2_tokenizer
from tabs.common import check_int, check_text, friendly_errors, get_bundle, read_text_upload, upload_path
from tabs.markup import html_text, md_text

# ---------------------------------------------------------------- choices and limits

SRC_TEXT = "Type or paste"
SRC_SAMPLE = "Built-in sample"
SRC_UPLOAD = "Upload a .txt file"
SOURCES = [SRC_TEXT, SRC_SAMPLE, SRC_UPLOAD]

TOK_GPT2 = GPT2
TOK_ACTIVE = "The active model's tokenizer"
TOKENIZERS = [TOK_GPT2, TOK_ACTIVE]

# Built-in samples: pydoc topics of this Python (the same source as the built-in corpus).
TOPIC_SAMPLES = {
    "Python docs: the for statement": ("for",),
    "Python docs: the while statement": ("while",),
    "Python docs: if, while and for, joined by <|endoftext|>": ("if", "while", "for"),
    "Python docs: string methods (long)": ("string-methods",),
}
CORPUS_SAMPLE = "Built-in training corpus: first 20,000 characters (built once, ~15 s)"
CORPUS_SAMPLE_CHARS = 20_000
VERDICT_SAMPLE = "The Verdict (the book's story; needs the network once)"
SAMPLES = list(TOPIC_SAMPLES) + [CORPUS_SAMPLE, VERDICT_SAMPLE]

MAX_LENGTH_LIMIT = 2048
MAX_STRIDE = 1_000_000
MAX_BATCH_SIZE = 64
MAX_BATCH_INDEX = 1000
MAX_SEED = 2**32 - 1

# What is drawn is capped; the counts and the formula always cover the whole text.
MAX_STREAM_TOKENS = 160
MAX_LANES = 40          # rows of window bars
MAX_DRAWN_WINDOWS = 160
MAX_TABLE_ROWS = 100
MAX_PAIRS = 64
MAX_IDS_IN_CELL = 32
MAX_JSON_STARTS = 10_000
MAX_JSON_BATCH_ELEMENTS = 8192

DEFAULTS = dict(source=SRC_SAMPLE, text="", sample=SAMPLES[0], tokenizer=TOK_GPT2, max_length=8,
                stride=4, batch_size=4, shuffle=False, seed=123, drop_last=True, window=0, batch=0)

TABLE_HEADERS = ["window", "start", "input ids", "target ids", "input text", "target text"]

INTRO = """\
A GPT learns from one long stream of token ids. The book's `GPTDatasetV1` cuts it into
**windows** of `max_length` tokens (the inputs); each target is the same window **shifted one
token to the right**, so every position in a window is one "predict the next token" example.
`create_dataloader_v1` stacks windows into batches of shape `[batch_size, max_length]`.
"""

LEGEND = """\
<div class="smp-legend">
<span><i class="smp-key smp-in"></i>input window</span>
<span><i class="smp-key smp-tg"></i>its target (shifted by one)</span>
<span><b class="smp-tok smp-ov">tok</b>in 2+ inputs (overlap)</span>
<span><b class="smp-tok smp-tgonly">tok</b>only ever a target</span>
<span><b class="smp-tok smp-skip">tok</b>never seen (skipped)</span>
<span><b class="smp-tok smp-special">tok</b>special token</span>
<span>␣ space · ↵ newline · ⇥ tab · &lt;0xE6&gt; a byte that is part of a character</span>
</div>"""

class _Unavailable(Exception):
    pass


# ---------------------------------------------------------------- corpus and tokenizer

def _topic_sample(topics: tuple[str, ...]) -> str:
    docs = {d.split("\n", 1)[0].removeprefix("Topic "): d for d in corpus.topic_documents()}
    missing = [t for t in topics if t not in docs]
    if missing:
        raise gr.Error(f"This Python's documentation has no topic {missing[0]!r}; choose another sample.")
    return corpus.DOC_SEPARATOR.join(docs[t] for t in topics)


def builtin_sample(name: str) -> str:
    """The text of a built-in sample (generated from this Python's docs, or the book's story)."""
    if name in TOPIC_SAMPLES:
        return _topic_sample(TOPIC_SAMPLES[name])
    if name == CORPUS_SAMPLE:
        return corpus.pydoc_corpus()[:CORPUS_SAMPLE_CHARS]
    if name == VERDICT_SAMPLE:
        book = corpus.the_verdict()
        if not book.available:
            raise gr.Error(f"{book.reason} Choose another sample, or paste or upload a text.",
                           title="Sample unavailable")
        return book.text
    raise gr.Error(f"Unknown sample {name!r}: choose one of the built-in samples in the list.")


def read_corpus(source: str, text: str | None, upload, sample: str | None) -> tuple[str, str]:
    """(text, a short description of where it came from) for the chosen source."""
    if source == SRC_TEXT:
        return check_text(text, "text"), "your text"
    if source == SRC_SAMPLE:
        return builtin_sample(sample or ""), f"built-in sample “{md_text(sample or '')}”"
    if source == SRC_UPLOAD:
        loaded = read_text_upload(upload)
        name = md_text(str(upload_path(upload)).replace("\\", "/").rsplit("/", 1)[-1])
        return loaded, f"uploaded file {name}"
    raise gr.Error(f"Unknown source {source!r}: choose one of {', '.join(SOURCES)}.")


def pick_tokenizer(choice: str, model_name: str | None):
    if choice == TOK_GPT2:
        return gpt2_tokenizer()
    if choice == TOK_ACTIVE:
        return get_bundle(model_name).tokenizer
    raise gr.Error(f"Unknown tokenizer {choice!r}: choose one of {', '.join(TOKENIZERS)}.")


def _ids(ids, limit: int = MAX_IDS_IN_CELL) -> str:
    ids = [int(i) for i in ids]
    if len(ids) <= limit:
        return str(ids)
    return str(ids[:limit])[:-1] + f", … (+{len(ids) - limit})]"


# ---------------------------------------------------------------- views

def _stride_effect(max_length: int, stride: int) -> str:
    if stride < max_length:
        return (f"stride {stride} < max_length {max_length}: neighbouring windows **overlap** by "
                f"{max_length - stride} tokens, so a token is an input in about max_length / stride = "
                f"{max_length / stride:.3g} windows (more examples, but more repetition).")
    if stride == max_length:
        return (f"stride = max_length = {max_length}: the windows **tile** the text with no overlap; every "
                "token is an input once (the book uses this to avoid overfitting).")
    return (f"stride {stride} > max_length {max_length}: **{stride - max_length} tokens between windows are "
            "never an input** (the first of them is still a target; the rest are skipped entirely).")


def summary_markdown(s: Sampling) -> str:
    n, L, S = s.n_tokens, s.max_length, s.stride
    lines = [f"**{s.text_chars:,} characters** from {s.origin} → **{n:,} tokens** "
             f"({md_text(s.tokenizer.name)} tokenizer).", ""]
    if n - L > 0:
        formula = (f"len(range(0, N − max_length, stride)) = ⌈(N − max_length) / stride⌉ = "
                   f"⌈({n:,} − {L:,}) / {S:,}⌉ = ⌈{n - L:,} / {S:,}⌉")
    else:
        formula = (f"len(range(0, N − max_length, stride)) = len(range(0, {n:,} − {L:,}, {S:,})) "
                   f"— N − max_length = {n - L:,} ≤ 0, an empty range")
    lines.append(f"**Windows** = {formula} = **{s.num_windows:,}**")
    if s.num_windows:
        last = s.starts[-1]
        lines.append("")
        lines.append(f"Starts: {', '.join(str(x) for x in s.starts[:8])}{', …' if s.num_windows > 8 else ''} "
                     f"(last at {last:,}: input tokens {last:,}–{last + L - 1:,}, target up to {last + L:,}).")
        bs = s.batch_size
        if s.drop_last:
            dropped = s.num_windows - s.num_batches * bs
            batches = (f"⌊{s.num_windows:,} / {bs}⌋ = **{s.num_batches:,}** "
                       f"(drop_last: {dropped} leftover window{'s' if dropped != 1 else ''} "
                       f"{'are' if dropped != 1 else 'is'} skipped each epoch)")
        else:
            rest = s.num_windows - (s.num_batches - 1) * bs
            batches = (f"⌈{s.num_windows:,} / {bs}⌉ = **{s.num_batches:,}** "
                       f"(the last batch has {rest} row{'s' if rest != 1 else ''})")
        lines.append("")
        lines.append(f"**Batches per epoch** = {batches}; each batch is `[{bs}, {L}]` inputs + `[{bs}, {L}]` targets.")
        as_input, as_target = s.as_input, s.as_target
        never_input = int((as_input == 0).sum())
        never_seen = int(((as_input == 0) & (as_target == 0)).sum())
        lines.append("")
        lines.append(f"{_stride_effect(L, S)} Tokens never an input: {never_input:,}; never seen at all: "
                     f"{never_seen:,} (this includes the end of the text after the last window).")
    for w in s.warnings:
        lines += ["", f"⚠️ **Warning:** {w}"]
    for note in s.notices:
        lines += ["", f"ℹ️ {note}"]
    return "\n".join(lines)


def _hue(i: int) -> int:
    return (i * 47 + 200) % 360


def pack_lanes(starts: list[int], span: int) -> list[tuple[int, int]]:
    """(window, row) pairs: each window goes on the first row where it does not touch an earlier
    one, so windows that overlap stack up and the stack's height shows the overlap."""
    row_ends: list[int] = []
    placed = []
    for i, start in enumerate(starts):
        row = next((r for r, end in enumerate(row_ends) if end <= start), len(row_ends))
        if row == len(row_ends):
            if row >= MAX_LANES:
                continue
            row_ends.append(0)
        row_ends[row] = start + span
        placed.append((i, row))
    return placed


def stream_html(s: Sampling) -> str:
    """The first tokens as columns; each window a bar across its input tokens with its
    target (the same bar one token later) underneath."""
    n, L = s.n_tokens, s.max_length
    shown = min(n, MAX_STREAM_TOKENS)
    if shown == 0:
        return '<div class="smp-note">The text has no tokens.</div>'
    as_input, as_target = s.as_input, s.as_target
    tok = s.tokenizer
    ids = s.token_ids[:shown].tolist()
    parts = [LEGEND, '<div class="smp-wrap"><div class="smp-grid" id="smp-grid">']
    for col, tid in enumerate(ids, start=1):
        classes = ["smp-tok"]
        if as_input[col - 1] == 0 and as_target[col - 1] == 0:
            classes.append("smp-skip")
            why = "never an input nor a target"
        elif as_input[col - 1] == 0:
            classes.append("smp-tgonly")
            why = "only ever a target"
        else:
            why = f"in {as_input[col - 1]} input window(s)"
            if as_input[col - 1] > 1:
                classes.append("smp-ov")
        if tid == tok.eot_id:
            classes.append("smp-special")
        title = html_text(f"position {col - 1}, id {tid}: {why}", quote=True)
        parts.append(f'<div class="smp-pos" style="grid-column:{col};grid-row:1">{col - 1}</div>')
        parts.append(f'<b class="{" ".join(classes)}" style="grid-column:{col};grid-row:2" title="{title}">'
                     f'{html_text(s.label(tid))}</b>')
        parts.append(f'<div class="smp-cov" style="grid-column:{col};grid-row:3" '
                     f'title="in this many input windows">{as_input[col - 1] or "·"}</div>')
    lanes = pack_lanes([st for st in s.starts[:MAX_DRAWN_WINDOWS] if st < shown], L + 1)
    for i, row in lanes:
        row += 4  # below the position, token and count rows
        start = s.starts[i]
        end_in, end_tg = min(start + L, shown), min(start + 1 + L, shown)  # exclusive token ends
        hue = _hue(i)
        sel = " smp-sel" if i == s.window else ""
        title = html_text(f"window {i}: input tokens {start}–{start + L - 1}, target {start + 1}–{start + L}",
                            quote=True)
        # Grid lines are 1-based: token t sits between lines t+1 and t+2.
        parts.append(f'<div class="smp-in{sel}" data-window="{i}" style="grid-column:{start + 1}/{end_in + 1};'
                     f'grid-row:{row};background:hsl({hue},70%,50%)" title="{title}">'
                     f'<span class="smp-lbl">w{i}</span></div>')
        if start + 1 < end_tg:
            parts.append(f'<div class="smp-tg" style="grid-column:{start + 2}/{end_tg + 1};grid-row:{row};'
                         f'color:hsl({hue},60%,40%)" title="{title}"></div>')
    parts.append("</div></div>")
    notes = []
    if shown < n:
        notes.append(f"Showing the first {shown} of {n:,} tokens; bars are cut at the edge.")
    if s.num_windows > len(lanes):
        notes.append(f"Drawing {len(lanes)} of {s.num_windows:,} windows.")
    notes.append("Windows that share tokens are stacked: the deeper the stack, the more overlap.")
    notes.append("The small number under each token counts the input windows that contain it.")
    parts.append(f'<div class="smp-note">{" ".join(notes)}</div>')
    return "".join(parts)


def windows_table(s: Sampling) -> list[list]:
    rows = []
    for i in range(min(s.num_windows, MAX_TABLE_ROWS)):
        x, y = s.dataset[i]
        rows.append([i, s.starts[i], _ids(x), _ids(y), s.text_of(x.tolist()),
                     s.text_of(y.tolist())])
    return rows


def pairs_html(s: Sampling) -> str:
    """The book's "context ----> desired" listing for one window."""
    if s.window is None:
        return '<div class="smp-note">No windows, so no next-token pairs: lower max_length or add text.</div>'
    x, y = s.dataset[s.window]
    x, y = x.tolist(), y.tolist()
    start = s.starts[s.window]
    head = (f'<p><b>Window {s.window}</b> (tokens {start}–{start + s.max_length - 1}) holds '
            f'{s.max_length} training examples: after each prefix of the input, the target says what comes next.</p>')
    rows = ['<table class="smp-pairs"><tr><th>context (ids)</th><th></th><th>desired</th>'
            '<th>context (text)</th><th></th><th>desired</th></tr>']
    for k in range(1, min(s.max_length, MAX_PAIRS) + 1):
        ctx, desired = x[:k], y[k - 1]
        ctx_ids = str(ctx) if k <= 8 else f"[… {k - 6} more, {', '.join(map(str, ctx[-6:]))}]"
        ctx_text = ("…" if k > 24 else "") + s.text_of(ctx if k <= 24 else ctx[-24:])
        rows.append(f"<tr><td>{html_text(ctx_ids)}</td><td class='smp-arrow'>----&gt;</td><td>{desired}</td>"
                    f"<td>{html_text(ctx_text)}</td><td class='smp-arrow'>----&gt;</td>"
                    f"<td>{html_text(s.label(desired))}</td></tr>")
    rows.append("</table>")
    more = ""
    if s.max_length > MAX_PAIRS:
        more = f'<div class="smp-note">Showing {MAX_PAIRS} of the {s.max_length} pairs.</div>'
    return head + '<div class="smp-scroll">' + "".join(rows) + "</div>" + more


def batch_code(s: Sampling) -> str:
    if s.batch is None:
        if s.num_windows == 0:
            return "# No windows, so no batches: the text is shorter than max_length + 1 tokens."
        return "# No batches: drop_last dropped every window (batch_size is larger than the number of windows)."
    inputs, targets = s.batch
    order = f"shuffled with seed {s.seed}" if s.shuffle else "in order: shuffle is off"
    starts = [s.starts[w] for w in s.batch_windows]
    return "\n".join([
        f"# batch {s.batch_index} of {s.num_batches} ({order})",
        f"# rows are windows {s.batch_windows} (starting at tokens {starts})",
        "inputs, targets = batch",
        f"inputs.shape   # {inputs.shape}  = [batch_size, max_length]",
        f"targets.shape  # {targets.shape}  = [batch_size, max_length]",
        "",
        f"inputs =\n{inputs!r}",
        "",
        f"targets =\n{targets!r}",
    ])


def as_data(s: Sampling) -> dict:
    """The same results as plain data, for the API."""
    windows = []
    for i in range(min(s.num_windows, MAX_TABLE_ROWS)):
        x, y = s.dataset[i]
        windows.append({"index": i, "start": s.starts[i], "input_ids": x.tolist(), "target_ids": y.tolist()})
    pairs = []
    if s.window is not None:
        x, y = (t.tolist() for t in s.dataset[s.window])
        pairs = [{"context": x[:k], "desired": y[k - 1]} for k in range(1, min(s.max_length, MAX_PAIRS) + 1)]
    batch = None
    if s.batch is not None:
        inputs, targets = s.batch
        batch = {"index": s.batch_index, "window_indices": s.batch_windows,
                 "starts": [s.starts[w] for w in s.batch_windows],
                 "inputs_shape": list(inputs.shape), "targets_shape": list(targets.shape)}
        if inputs.numel() <= MAX_JSON_BATCH_ELEMENTS:
            batch.update(inputs=inputs.tolist(), targets=targets.tolist())
        else:
            batch["omitted"] = f"tensors over {MAX_JSON_BATCH_ELEMENTS} elements are not sent; shapes are"
    as_input, as_target = s.as_input, s.as_target
    return {
        "tokenizer": s.tokenizer.name, "n_characters": s.text_chars, "n_tokens": s.n_tokens,
        "max_length": s.max_length, "stride": s.stride, "batch_size": s.batch_size,
        "shuffle": s.shuffle, "seed": s.seed, "drop_last": s.drop_last,
        "num_windows": s.num_windows, "num_batches": s.num_batches,
        "starts": list(s.starts[:MAX_JSON_STARTS]), "starts_truncated": s.num_windows > MAX_JSON_STARTS,
        "tokens_never_input": int((as_input == 0).sum()),
        "tokens_never_seen": int(((as_input == 0) & (as_target == 0)).sum()),
        "windows": windows, "window": {"index": s.window, "pairs": pairs}, "batch": batch,
        "warnings": s.warnings, "notices": s.notices,
    }


def render(s: Sampling):
    return summary_markdown(s), stream_html(s), pairs_html(s), batch_code(s), windows_table(s), as_data(s)


# ---------------------------------------------------------------- the event

def _stride(value) -> int:
    try:
        v = int(round(float(value)))
    except (TypeError, ValueError):
        raise gr.Error(f"stride must be a whole number (got {value!r}).") from None
    if v <= 0:
        raise gr.Error(f"stride must be at least 1 (got {v}): it is how far each window moves, so 0 would put "
                       "every window at the same place and a negative stride would walk backwards. "
                       "Use stride = max_length for windows that do not overlap.", title="Invalid stride")
    return check_int(v, "stride", 1, MAX_STRIDE)


def _context_of(model_name: str | None):
    """(context_length, vocab_size, name) of the active model; Nones when it cannot be loaded."""
    try:
        bundle = get_bundle(model_name)
    except gr.Error:
        return None, None, None
    return bundle.config.context_length, bundle.config.vocab_size, bundle.name


def run_sampling(source, text, upload, sample, tokenizer_choice, max_length, stride, batch_size,
                 shuffle, seed, drop_last, window, batch_index, model_name=None) -> Sampling:
    body, origin = read_corpus(source, text, upload, sample)
    tokenizer = pick_tokenizer(tokenizer_choice, model_name)
    max_length = check_int(max_length, "max_length", 1, MAX_LENGTH_LIMIT)
    stride = _stride(stride)
    batch_size = check_int(batch_size, "batch_size", 1, MAX_BATCH_SIZE)
    seed = check_int(seed if seed is not None else 0, "seed", 0, MAX_SEED)
    window = check_int(window if window is not None else 0, "window to inspect", 0, 10**9)
    batch_index = check_int(batch_index if batch_index is not None else 0, "batch to show", 0, MAX_BATCH_INDEX)
    context_length, vocab, name = _context_of(model_name)
    return compute(body, origin, tokenizer, max_length, stride, batch_size, bool(shuffle), seed,
                   bool(drop_last), window, batch_index, context_length=context_length, model_name=name,
                   model_vocab=vocab)


@friendly_errors
def sample_windows(source, text, upload, sample, tokenizer_choice, max_length, stride, batch_size,
                   shuffle, seed, drop_last, window, batch_index, model_name=None):
    # Warnings are shown once, in the summary beside the result: not as toasts, which repeat
    # when one gesture fires two events (leaving a number field by clicking Run).
    return render(run_sampling(source, text, upload, sample, tokenizer_choice, max_length, stride, batch_size,
                               shuffle, seed, drop_last, window, batch_index, model_name))


def on_source_change(source, text, upload, *rest):
    """Switching the source re-samples only when the new source has something to sample,
    so choosing "Type or paste" before typing is not an error."""
    if (source == SRC_TEXT and not (text or "").strip()) or (source == SRC_UPLOAD and upload is None):
        return tuple(gr.skip() for _ in range(6))
    return sample_windows(source, text, upload, *rest)


def _source_visibility(source):
    return (gr.update(visible=source == SRC_TEXT), gr.update(visible=source == SRC_SAMPLE),
            gr.update(visible=source == SRC_UPLOAD))


# ---------------------------------------------------------------- the tab

def build(ctx) -> None:
    d = DEFAULTS
    initial = None
    try:
        initial = render(run_sampling(d["source"], d["text"], None, d["sample"], d["tokenizer"], d["max_length"],
                                      d["stride"], d["batch_size"], d["shuffle"], d["seed"], d["drop_last"],
                                      d["window"], d["batch"], ctx.model_name.value))
    except gr.Error:
        pass  # the page still works; the first click shows the reason
    init = initial or ("", "", "", "", [], None)

    with gr.Tab("2 · Data sampling", id="sampler", elem_id="tab-sampler"):
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=3):
                source = gr.Radio(SOURCES, value=d["source"], label="Text to sample from", elem_id="smp-source",
                                  info="The whole text is tokenized into one stream of ids, then cut into windows.")
                sample = gr.Dropdown(SAMPLES, value=d["sample"], label="Built-in sample", elem_id="smp-sample",
                                     visible=d["source"] == SRC_SAMPLE,
                                     info="Taken from this Python installation's own documentation (the same "
                                          "source as the built-in training corpus), or the book's story when online.")
                text = gr.Textbox(lines=6, max_lines=14, label="Text", elem_id="smp-text",
                                  visible=d["source"] == SRC_TEXT, max_length=200_000,
                                  placeholder="Paste any text; <|endoftext|> becomes the special token.",
                                  info="Up to 200,000 characters.")
                upload = gr.File(label="A UTF-8 .txt file (up to 2 MB)", file_types=[".txt"], type="filepath",
                                 elem_id="smp-upload", visible=d["source"] == SRC_UPLOAD)
            with gr.Column(scale=2):
                tokenizer = gr.Radio(TOKENIZERS, value=d["tokenizer"], label="Tokenizer", elem_id="smp-tokenizer",
                                     info="GPT-2's BPE (as in the book) or the tokenizer of the model chosen above.")
                with gr.Row():
                    max_length = gr.Number(d["max_length"], precision=0, label="max_length", elem_id="smp-max-length",
                                           info="Tokens per window (the context the model sees). "
                                                "Each window needs max_length + 1 tokens: the target reaches one further.")
                    stride = gr.Number(d["stride"], precision=0, label="stride", elem_id="smp-stride",
                                       info="How far the next window starts. < max_length: windows overlap; "
                                            "= max_length: they tile the text; > max_length: tokens in between are skipped.")
                with gr.Row():
                    batch_size = gr.Number(d["batch_size"], precision=0, label="batch_size", elem_id="smp-batch-size",
                                           info=f"Windows stacked into one training step (1–{MAX_BATCH_SIZE}).")
                    drop_last = gr.Checkbox(d["drop_last"], label="drop_last", elem_id="smp-drop-last",
                                            info="Skip the last batch when it would be smaller than batch_size "
                                                 "(keeps every step the same size).")
                with gr.Row():
                    shuffle = gr.Checkbox(d["shuffle"], label="shuffle", elem_id="smp-shuffle",
                                          info="Visit windows in a random order each epoch (training does); "
                                               "the windows themselves do not change.")
                    seed = gr.Number(d["seed"], precision=0, label="seed", elem_id="smp-seed",
                                     info="Fixes the shuffled order, so the same seed gives the same batches.")
                with gr.Row():
                    window = gr.Number(d["window"], precision=0, label="window to inspect", elem_id="smp-window",
                                       info="Which window's next-token pairs to list (0 is the first).")
                    batch_index = gr.Number(d["batch"], precision=0, label="batch to show", elem_id="smp-batch",
                                            info="Which batch of the epoch to print as tensors (0 is the first).")
                run_btn = gr.Button("Sample windows", variant="primary", elem_id="smp-run")
        summary = gr.Markdown(init[0], elem_id="smp-summary")
        gr.Markdown("### The token stream and its windows")
        stream = gr.HTML(init[1], elem_id="smp-stream")
        gr.Markdown("### Next-token pairs in one window")
        pairs = gr.HTML(init[2], elem_id="smp-pairs")
        gr.Markdown("### One batch from the dataloader")
        batch = gr.Code(init[3], language="python", label="batch", elem_id="smp-batch-code",
                        interactive=False)
        gr.Markdown(f"### Windows (inputs and targets; first {MAX_TABLE_ROWS} shown)")
        table = gr.Dataframe(init[4], headers=TABLE_HEADERS, datatype=["number", "number", "str", "str", "str", "str"],
                             interactive=False, wrap=True, elem_id="smp-table", max_height=420)
        with gr.Accordion("The same results as data (what the API returns)", open=False):
            data = gr.JSON(init[5], elem_id="smp-data")

        inputs = [source, text, upload, sample, tokenizer, max_length, stride, batch_size, shuffle, seed,
                  drop_last, window, batch_index, ctx.model_name]
        outputs = [summary, stream, pairs, batch, table, data]
        source.change(_source_visibility, source, [text, sample, upload], api_visibility="private", queue=False)
        # Numbers that may be cleared while typing re-sample on Enter or when the field is left;
        # the others (empty means 0) re-sample as they change.
        gr.on([run_btn.click, max_length.submit, stride.submit, batch_size.submit, max_length.blur, stride.blur,
               batch_size.blur, seed.input, window.input, batch_index.input, sample.input, tokenizer.input, shuffle.input, drop_last.input,
               upload.upload], sample_windows, inputs, outputs, api_name="sample_windows",
              trigger_mode="always_last")
        source.input(on_source_change, inputs, outputs, api_visibility="private", trigger_mode="always_last")
        ctx.model_changed.change(sample_windows, inputs, outputs, api_visibility="private",
                                 trigger_mode="always_last")

        examples = gr.Examples(
            [[SRC_SAMPLE, "", SAMPLES[0], 4, 1, 1, False, 0],
             [SRC_SAMPLE, "", SAMPLES[0], 4, 4, 8, False, 0],
             [SRC_SAMPLE, "", SAMPLES[0], 4, 6, 4, False, 0],
             [SRC_SAMPLE, "", SAMPLES[2], 16, 8, 4, True, 123],
             [SRC_TEXT, "A small cat sat on a warm mat. The cat purred; the mat stayed warm all day.", SAMPLES[0],
              5, 2, 2, False, 0]],
            inputs=[source, text, sample, max_length, stride, batch_size, shuffle, seed],
            label="Try: the book's stride 1 (heavy overlap), stride = max_length (none), stride > max_length "
                  "(skips), a shuffled loader, your own sentence",
        )
        examples.load_input_event.then(_source_visibility, source, [text, sample, upload],
                                       api_visibility="private", queue=False).then(
            sample_windows, inputs, outputs, api_visibility="private")
