"""Attention, seen from the outside (chapter 3): what the views of the Attention tab compute.

Everything here reads one traced forward pass (``GPTModel.run_with_trace``) or the
model's own modules; nothing re-implements the model. The three parts:

- ``trace_prompt``: encode a prompt (capped), run the trace, stack every layer's
  attention weights into [layers, heads, T, T];
- ``head_statistics``: one number per head (entropy, previous-token, first-token,
  self score) so head types stand out in a layers × heads grid;
- ``attention_steps``: the maths of one head on a short prompt, step by step, with
  the model's numbers, and ``toy_self_attention``: the book's six-word example.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .token_text import token_label
from ..model import GPTModel, Trace
from ..trace_cache import TRACES

MAX_TOKENS = 256        # heatmaps stay readable and light beyond this
MATH_MAX_TOKENS = 12    # the step-by-step tables show at most this many tokens
DROPOUT_P = 0.5         # the book's illustration: about half the weights dropped, the rest doubled


class PromptError(ValueError):
    """A prompt that cannot be shown (empty, nothing left after encoding)."""


# ---------------------------------------------------------------- the traced prompt

@dataclass
class PromptTokens:
    ids: list[int]          # the ids that are run (at most ``limit``)
    labels: list[str]       # display strings, one per id
    total: int              # tokens in the whole prompt
    limit: int              # min(display cap, context length)
    limit_reason: str       # "display cap" or "context length"

    @property
    def truncated(self) -> bool:
        return self.total > len(self.ids)

    def notice(self) -> str:
        if not self.truncated:
            return ""
        return (f"The prompt has {self.total:,} tokens; only the first {self.limit:,} are shown "
                f"(the {self.limit_reason} is {self.limit:,}).")


def encode_prompt_keep_first(tokenizer, text: str, context_length: int, cap: int = MAX_TOKENS) -> PromptTokens:
    """Token ids of a prompt, cut to the display cap or the model's context, whichever is smaller."""
    if not (text or "").strip():
        raise PromptError("The prompt is empty: type a sentence to see where each token looks.")
    ids = list(tokenizer.encode(text))  # a literal <|endoftext|> is the special token, as in the book
    if not ids:
        raise PromptError("The prompt gave no tokens: type some text.")
    limit, reason = (cap, "display cap") if cap <= context_length else (context_length, "context length")
    kept = ids[:limit]
    return PromptTokens(kept, [token_label(tokenizer, i) for i in kept], len(ids), limit, reason)


def single_token(tokenizer, text: str) -> int:
    """The id of ``text`` when it is exactly one token of this tokenizer (a leading space counts)."""
    if not text:
        raise PromptError("Type the token to explain, e.g. ' the' (with its leading space).")
    ids = list(tokenizer.encode(text))
    if len(ids) != 1:
        pieces = " | ".join(token_label(tokenizer, i) for i in ids) or "nothing"
        raise PromptError(f"{text!r} is {len(ids)} tokens of this model ({pieces}), not one: choose a single "
                          "token (a leading space is part of a token), or leave it empty for the prediction.")
    return ids[0]


@dataclass
class AttentionTrace:
    tokens: PromptTokens
    trace: Trace            # every named activation of the pass (batch of one)
    weights: torch.Tensor   # [layers, heads, T, T], float32 on the CPU
    _stats: dict | None = field(default=None, repr=False)

    def statistics(self) -> dict[str, torch.Tensor]:
        """``head_statistics`` of the weights, computed once per trace."""
        if self._stats is None:
            self._stats = head_statistics(self.weights)
        return self._stats

    @property
    def n_layers(self) -> int:
        return self.weights.shape[0]

    @property
    def n_heads(self) -> int:
        return self.weights.shape[1]


def attention_stack(trace: Trace) -> torch.Tensor:
    """Every layer's attention weights from a trace, batch row 0: [layers, heads, T, T]."""
    maps, i = [], 0
    while f"blocks.{i}.attn.weights" in trace:
        maps.append(trace[f"blocks.{i}.attn.weights"][0])
        i += 1
    if not maps:
        raise KeyError("the trace holds no attention weights")
    return torch.stack(maps).float().cpu()


def trace_prompt(model: GPTModel, tokenizer, text: str, cap: int = MAX_TOKENS,
                 cache_name: str | None = None) -> AttentionTrace:
    """Encode ``text`` (capped) and run one traced forward pass; with ``cache_name`` (the
    model's name) a prompt traced recently on the same model is served from ``TRACES``."""
    tokens = encode_prompt_keep_first(tokenizer, text, model.cfg.context_length, cap)

    def run() -> AttentionTrace:
        ids = torch.tensor([tokens.ids], dtype=torch.long, device=model.device)
        trace = model.run_with_trace(ids)
        return AttentionTrace(tokens, trace, attention_stack(trace))
    if cache_name is None:
        return run()
    cached = TRACES.get_or_compute(cache_name, model, tokens.ids, "attention", run)
    # the token count and cut notice belong to this text (two texts may share the kept ids)
    if cached.tokens != tokens:
        return AttentionTrace(tokens, cached.trace, cached.weights, cached.statistics())
    return cached


# ---------------------------------------------------------------- one number per head

HEAD_STATISTICS: dict[str, str] = {
    "entropy": "How spread out the attention is: 0 = each token looks at a single token, "
               "1 = spread evenly over every token it may see (entropy / log of the row length).",
    "previous token": "Average weight on the token just before (a 'previous-token head' scores near 1).",
    "first token": "Average weight on the first token (many heads park attention there when "
                   "they have nothing to do: an 'attention sink').",
    "self": "Average weight a token puts on itself.",
}


def head_statistics(weights: torch.Tensor, chunk: int = 16) -> dict[str, torch.Tensor]:
    """Per-head summaries of causal attention weights [..., T, T] -> each [...].

    Averaged over query positions 1..T-1: position 0 can only look at itself, which
    says nothing about the head (with T = 1 that single row is all there is).
    Maps are processed ``chunk`` at a time so GPT-2 XL's 1,200 heads need little memory.
    """
    lead, t = weights.shape[:-2], weights.shape[-1]
    flat = weights.reshape(-1, t, t)
    parts = [_head_statistics(flat[i:i + chunk]) for i in range(0, flat.shape[0], chunk)]
    return {name: torch.cat([p[name] for p in parts]).reshape(lead) for name in parts[0]}


def _head_statistics(weights: torch.Tensor) -> dict[str, torch.Tensor]:
    w = weights.float()
    t = w.shape[-1]
    rows = torch.arange(1, t) if t > 1 else torch.arange(0, 1)
    sub = w[..., rows, :]                                          # [..., R, T]
    plogp = torch.where(sub > 0, sub * sub.clamp_min(1e-30).log(), torch.zeros_like(sub))
    entropy = -plogp.sum(-1)                                       # nats per row
    visible = (rows + 1).float().log()                             # log(row length): uniform's entropy
    normalised = torch.where(visible > 0, entropy / visible.clamp_min(1e-30), torch.zeros_like(entropy))
    prev_cols = (rows - 1).clamp_min(0)
    prev = sub.gather(-1, prev_cols.expand(*sub.shape[:-1]).unsqueeze(-1)).squeeze(-1)
    if t == 1:
        prev = torch.zeros_like(prev)
    first = sub[..., 0]
    self_ = sub.gather(-1, rows.expand(*sub.shape[:-1]).unsqueeze(-1)).squeeze(-1)
    return {"entropy": normalised.mean(-1), "previous token": prev.mean(-1),
            "first token": first.mean(-1), "self": self_.mean(-1)}


def strongest_heads(stat: torch.Tensor, k: int = 3, largest: bool = True) -> list[tuple[int, int, float]]:
    """The k heads with the highest (or lowest) value of a [layers, heads] statistic."""
    flat = stat.flatten()
    k = max(0, min(int(k), flat.numel()))
    values, idx = flat.topk(k, largest=largest)
    n_heads = stat.shape[1]
    return [(int(i) // n_heads, int(i) % n_heads, float(v)) for v, i in zip(values, idx)]


def pooled(weights: torch.Tensor, max_cells: int) -> tuple[torch.Tensor, int]:
    """Average-pool the last two dims of [..., T, T] so that ``n_maps * side²`` fits in
    ``max_cells`` (a grid of heads stays one light figure). Returns (maps, stride)."""
    n_maps = int(np.prod(weights.shape[:-2])) if weights.dim() > 2 else 1
    t = weights.shape[-1]
    stride = 1
    while n_maps * math.ceil(t / stride) ** 2 > max_cells:
        stride += 1
    if stride == 1:
        return weights, 1
    lead = weights.shape[:-2]
    x = weights.reshape(-1, 1, t, t)
    x = torch.nn.functional.avg_pool2d(x, stride, stride, ceil_mode=True, count_include_pad=False)
    return x.reshape(*lead, *x.shape[-2:]), stride


def focus_window(weights_row: torch.Tensor, focus: int, max_keys: int) -> tuple[int, float]:
    """For a head view: the first key shown when at most ``max_keys`` keys up to ``focus``
    fit, and the weight carried by the earlier keys left out."""
    start = max(0, focus + 1 - max_keys)
    return start, float(weights_row[:start].sum())


@dataclass
class AttentionView:
    """Everything the Attention tab draws for one prompt, layer, head and focus token."""

    tokens: PromptTokens
    layer: int
    head: int
    focus: int                     # the query position of the head view (0..T-1)
    head_map: np.ndarray           # [T, T] the chosen head's weights
    mean_map: np.ndarray           # [T, T] the layer's heads averaged
    layer_weights: np.ndarray      # [heads, T, T] every head of the layer
    layer_maps: np.ndarray         # [heads, S, S] the same, average-pooled to fit a grid
    layer_stride: int              # tokens per pooled cell side (1: not pooled)
    focus_start: int               # the first key the head view lists
    focus_hidden: float            # the weight on the earlier keys it leaves out
    statistics: dict[str, np.ndarray]   # [layers, heads] per statistic
    statistic: str                 # the one the summary grid shows
    strongest: list[tuple[int, int, float]]  # its three most notable heads (lowest for entropy)
    steps: AttentionSteps | None = None      # the maths of the chosen head


def attention_view(att: AttentionTrace, layer: int, head: int, focus: int, statistic: str,
                   max_cells: int, max_keys: int, steps: AttentionSteps | None = None) -> AttentionView:
    """Read one traced prompt for the tab's views (see ``AttentionView``)."""
    layer_weights = att.weights[layer]
    maps, stride = pooled(layer_weights, max_cells)
    start, hidden = focus_window(layer_weights[head, focus], focus, max_keys)
    stats = att.statistics()
    return AttentionView(
        tokens=att.tokens, layer=layer, head=head, focus=focus,
        head_map=layer_weights[head].numpy(), mean_map=layer_weights.mean(0).numpy(),
        layer_weights=layer_weights.numpy(), layer_maps=maps.numpy(), layer_stride=stride,
        focus_start=start, focus_hidden=hidden,
        statistics={k: v.numpy() for k, v in stats.items()}, statistic=statistic,
        strongest=strongest_heads(stats[statistic], k=3, largest=statistic != "entropy"), steps=steps)


# ---------------------------------------------------------------- the maths, step by step

@dataclass
class AttentionSteps:
    layer: int
    head: int
    labels: list[str]           # the T tokens shown (T <= MATH_MAX_TOKENS)
    head_dim: int
    x: torch.Tensor             # [T, d] the block's LayerNorm output: what attention reads
    w_query: torch.Tensor       # [d, hd] this head's columns of W_q (x @ w_query = q)
    w_key: torch.Tensor
    w_value: torch.Tensor
    q: torch.Tensor             # [T, hd] from the trace
    k: torch.Tensor
    v: torch.Tensor
    raw_scores: torch.Tensor    # [T, T] q · kᵀ
    scaled: torch.Tensor        # [T, T] / √d_k
    masked: torch.Tensor        # [T, T] −∞ above the diagonal
    weights: torch.Tensor       # [T, T] softmax over each row
    dropout_p: float
    dropout_keep: torch.Tensor  # [T, T] bool: which weights survive the illustration
    dropped: torch.Tensor       # [T, T] weights · keep / (1 − p)
    context: torch.Tensor       # [T, hd] weights @ v
    check_qkv: float            # max |x @ W + b − trace q/k/v|
    check_scores: float         # max |our masked scores − trace scores| (finite entries)
    check_weights: float        # max |softmax − trace weights|
    check_output: float         # max |out_proj(all heads' contexts) − trace attn.out|


def _head_slice(linear: torch.nn.Linear, head: int, head_dim: int):
    cols = slice(head * head_dim, (head + 1) * head_dim)
    w = linear.weight[cols].T                       # nn.Linear stores [out, in]
    b = linear.bias[cols] if linear.bias is not None else None
    return w, b


def attention_steps(model: GPTModel, att: AttentionTrace, layer: int, head: int,
                    n_tokens: int = 6, dropout_p: float = DROPOUT_P,
                    generator: torch.Generator | None = None) -> AttentionSteps:
    """One head's attention on the first ``n_tokens`` tokens, every intermediate kept.

    Causal attention never looks right, so the first n tokens of the full pass are
    exactly what a pass over those n tokens alone would give. Each step is checked
    against what the model itself recorded.
    """
    cfg = model.cfg
    if not 0 <= layer < cfg.n_layers:
        raise IndexError(f"layer {layer} is out of range 0..{cfg.n_layers - 1}")
    if not 0 <= head < cfg.n_heads:
        raise IndexError(f"head {head} is out of range 0..{cfg.n_heads - 1}")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout p must be in [0, 1) (got {dropout_p})")
    t = max(1, min(int(n_tokens), MATH_MAX_TOKENS, len(att.tokens.ids)))
    tr, name = att.trace, f"blocks.{layer}.attn."
    mha = model.trf_blocks[layer].att
    hd = mha.head_dim
    with torch.no_grad():
        x = tr[f"blocks.{layer}.ln1"][0, :t].float().cpu()
        q = tr[name + "q"][0, head, :t].float().cpu()
        k = tr[name + "k"][0, head, :t].float().cpu()
        v = tr[name + "v"][0, head, :t].float().cpu()
        projections = [_head_slice(lin, head, hd) for lin in (mha.W_query, mha.W_key, mha.W_value)]
        projections = [(w.float().cpu(), None if b is None else b.float().cpu()) for w, b in projections]
        check_qkv = max(float(((x @ w + (0 if b is None else b)) - ref).abs().max())
                        for (w, b), ref in zip(projections, (q, k, v)))

        raw = q @ k.T
        scaled = raw / math.sqrt(hd)
        masked = scaled.masked_fill(mha.mask[:t, :t].cpu(), float("-inf"))
        weights = torch.softmax(masked, dim=-1)
        ref_scores = tr[name + "scores"][0, head, :t, :t].float().cpu()
        finite = torch.isfinite(ref_scores)
        if not torch.equal(finite, torch.isfinite(masked)):
            raise RuntimeError("the causal mask differs from the model's")
        check_scores = float((masked[finite] - ref_scores[finite]).abs().max())
        check_weights = float((weights - att.weights[layer, head, :t, :t]).abs().max())

        gen = generator if generator is not None else torch.Generator().manual_seed(123)
        keep = torch.rand(weights.shape, generator=gen) >= dropout_p
        dropped = weights * keep / (1.0 - dropout_p)
        context = weights @ v

        # All heads' contexts, concatenated and projected, must give the layer's output.
        all_w = tr[name + "weights"][0]                            # [H, T_all, T_all]
        all_ctx = (all_w @ tr[name + "v"][0]).transpose(0, 1)      # [T_all, H, hd]
        out = mha.out_proj(all_ctx.reshape(all_ctx.shape[0], -1))
        check_output = float((out - tr[name + "out"][0]).abs().max())

    return AttentionSteps(layer, head, att.tokens.labels[:t], hd, x, *[w for w, _ in projections],
                          q, k, v, raw, scaled, masked, weights, dropout_p, keep, dropped, context,
                          check_qkv, check_scores, check_weights, check_output)


# ---------------------------------------------------------------- the book's toy example

TOY_WORDS = ["Your", "journey", "starts", "with", "one", "step"]
TOY_EMBEDDINGS = [  # the book's 3-d embeddings (section 3.3.1)
    [0.43, 0.15, 0.89],
    [0.55, 0.87, 0.66],
    [0.57, 0.85, 0.64],
    [0.22, 0.58, 0.33],
    [0.77, 0.25, 0.10],
    [0.05, 0.80, 0.55],
]


@dataclass
class ToyAttention:
    words: list[str]
    inputs: torch.Tensor        # [6, 3]
    query_index: int
    scores: torch.Tensor        # [6] inputs @ query (dot products, no trainable weights)
    weights: torch.Tensor       # [6] softmax(scores)
    context: torch.Tensor       # [3] weights @ inputs
    all_scores: torch.Tensor    # [6, 6] every query at once: inputs @ inputsᵀ
    all_weights: torch.Tensor   # [6, 6]
    all_context: torch.Tensor   # [6, 3]


def toy_self_attention(query: int | str = 1) -> ToyAttention:
    """Simplified self-attention (no W_q, W_k, W_v) on "Your journey starts with one step"."""
    if isinstance(query, str):
        if query not in TOY_WORDS:
            raise ValueError(f"{query!r} is not one of {', '.join(TOY_WORDS)}")
        query = TOY_WORDS.index(query)
    if not 0 <= int(query) < len(TOY_WORDS):
        raise IndexError(f"query {query} is out of range 0..{len(TOY_WORDS) - 1}")
    inputs = torch.tensor(TOY_EMBEDDINGS, dtype=torch.float32)
    all_scores = inputs @ inputs.T
    all_weights = torch.softmax(all_scores, dim=-1)
    all_context = all_weights @ inputs
    i = int(query)
    return ToyAttention(list(TOY_WORDS), inputs, i, all_scores[i], all_weights[i], all_context[i],
                        all_scores, all_weights, all_context)
