"""The architecture view (chapter 4): what a GPTModel is made of and what flows through it.

Parameter counts come from the model's own modules (``parameter_breakdown(model)``);
``config_parameter_breakdown(cfg)`` gives the same numbers from a config alone, for sizes
too big to build (tests check the two agree). The residual stream, the logit
lens and the LayerNorm demonstration read one traced forward pass.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..config import GPTConfig
from ..model import GELU, GPTModel, LayerNorm, Trace
from ..trace_cache import TRACES
from .token_text import token_label

MiB = 1024 * 1024
BYTES_PER_PARAM = {"fp32": 4, "bf16": 2}


def _numel(module_or_params) -> int:
    params = module_or_params.parameters() if hasattr(module_or_params, "parameters") else module_or_params
    return sum(p.numel() for p in params)


# ---------------------------------------------------------------- parameter counts

@dataclass(frozen=True)
class ParameterBreakdown:
    """Parameters per component; block rows are the sum over all blocks."""

    token_embedding: int
    position_embedding: int
    attention: int            # all blocks
    feed_forward: int         # all blocks
    norms: int                # norm1 + norm2 of all blocks
    final_norm: int
    output_head: int
    n_layers: int
    tied: bool                # the model shares tok_emb and out_head
    tieable: bool = True      # head and token table have the same shape (a classifier head does not)

    @property
    def blocks(self) -> int:
        return self.attention + self.feed_forward + self.norms

    @property
    def untied_total(self) -> int:
        """Every component counted, the output head as its own matrix (the book's 163M)."""
        return (self.token_embedding + self.position_embedding + self.blocks
                + self.final_norm + self.output_head)

    @property
    def tied_total(self) -> int | None:
        """The head shares the token table, so it adds nothing (GPT-2's 124M)."""
        return self.untied_total - self.output_head if self.tieable else None

    @property
    def total(self) -> int:
        """Unique parameters of this model as it is configured."""
        return self.tied_total if self.tied else self.untied_total

    @staticmethod
    def megabytes(count: int, dtype: str = "fp32") -> float:
        return count * BYTES_PER_PARAM[dtype] / MiB

    def per_block(self, name: str) -> int:
        return getattr(self, name) // max(self.n_layers, 1)

    def rows(self) -> list[tuple[str, int, int, str]]:
        """(component, per block or None, count, note) for a table."""
        n = self.n_layers
        head_note = ("shares the token embedding matrix: counted once" if self.tied
                     else "its own matrix; tying it to the token embedding would save this much"
                     if self.tieable else "a different shape from the token embedding: cannot be tied")
        return [
            ("token embedding", None, self.token_embedding, "vocab × emb_dim"),
            ("position embedding", None, self.position_embedding, "context × emb_dim"),
            (f"masked multi-head attention × {n}", self.per_block("attention"), self.attention,
             "W_query, W_key, W_value, out_proj"),
            (f"feed-forward × {n}", self.per_block("feed_forward"), self.feed_forward,
             "emb_dim → 4·emb_dim → emb_dim"),
            (f"LayerNorm × {2 * n} (two per block)", self.per_block("norms"), self.norms, "scale + shift"),
            ("final LayerNorm", None, self.final_norm, "scale + shift"),
            ("output head", None, self.output_head, head_note),
        ]


def parameter_breakdown(model: GPTModel) -> ParameterBreakdown:
    """Count from the modules themselves (works on a meta-device model too)."""
    head_params = list(model.out_head.parameters())
    tied = model.out_head.weight is model.tok_emb.weight
    return ParameterBreakdown(
        token_embedding=model.tok_emb.weight.numel(),
        position_embedding=model.pos_emb.weight.numel(),
        attention=sum(_numel(b.att) for b in model.trf_blocks),
        feed_forward=sum(_numel(b.ff) for b in model.trf_blocks),
        norms=sum(_numel(b.norm1) + _numel(b.norm2) for b in model.trf_blocks),
        final_norm=_numel(model.final_norm),
        output_head=sum(p.numel() for p in head_params),
        n_layers=len(model.trf_blocks),
        tied=tied,
        tieable=tuple(model.out_head.weight.shape) == tuple(model.tok_emb.weight.shape)
        and len(head_params) == 1,
    )


def config_parameter_breakdown(cfg: GPTConfig) -> ParameterBreakdown:
    """The same counts from the config alone (GPT-2 XL without 6 GB of weights)."""
    d, v, n = cfg.emb_dim, cfg.vocab_size, cfg.n_layers
    linear = lambda fan_in, fan_out, bias=True: fan_in * fan_out + (fan_out if bias else 0)  # noqa: E731
    attention = 3 * linear(d, d, cfg.qkv_bias) + linear(d, d)
    feed_forward = linear(d, 4 * d) + linear(4 * d, d)
    layer_norm = 2 * d
    return ParameterBreakdown(
        token_embedding=v * d,
        position_embedding=cfg.context_length * d,
        attention=n * attention,
        feed_forward=n * feed_forward,
        norms=n * 2 * layer_norm,
        final_norm=layer_norm,
        output_head=linear(d, v, bias=False),
        n_layers=n,
        tied=cfg.tie_weights,
    )


def build_on_meta(cfg: GPTConfig) -> GPTModel:
    """A GPTModel with real modules but no storage: shapes and counts at no memory cost."""
    with torch.device("meta"):
        return GPTModel(cfg)


# ---------------------------------------------------------------- the block diagram

@dataclass(frozen=True)
class DiagramNode:
    key: str
    label: str
    detail: str
    shape: str            # the activation shape leaving this step
    params: int | None
    in_block: bool        # inside the repeated TransformerBlock
    shortcut: str = ""    # "start" where a shortcut branches off, "add" where it joins


def architecture_diagram(cfg: GPTConfig, counts: ParameterBreakdown) -> list[DiagramNode]:
    """The GPT data flow from ids to logits, annotated with shapes and parameters."""
    d, h, v = cfg.emb_dim, cfg.n_heads, cfg.vocab_size
    act = f"[B, T, {d}]"
    return [
        DiagramNode("ids", "Token ids", f"up to {cfg.context_length:,} positions", "[B, T]", None, False),
        DiagramNode("tok_emb", "Token embedding", f"{v:,} × {d} lookup table", act,
                    counts.token_embedding, False),
        DiagramNode("pos_emb", "+ Positional embedding", f"{cfg.context_length:,} × {d}, absolute positions",
                    act, counts.position_embedding, False),
        DiagramNode("drop_emb", "Dropout", f"p = {cfg.drop_rate:g} (training only)", act, None, False),
        DiagramNode("norm1", "LayerNorm 1", "mean 0, variance 1, then scale and shift", act,
                    counts.per_block("norms") // 2, True, "start"),
        DiagramNode("att", "Masked multi-head attention",
                    f"{h} heads × {cfg.head_dim} dims, causal mask, out_proj", act,
                    counts.per_block("attention"), True),
        DiagramNode("add1", "Dropout + shortcut", "x + attention(LayerNorm(x))", act, None, True, "add"),
        DiagramNode("norm2", "LayerNorm 2", "mean 0, variance 1, then scale and shift", act,
                    counts.per_block("norms") // 2, True, "start"),
        DiagramNode("ff", "Feed-forward", f"{d} → {4 * d} → GELU → {d}", act,
                    counts.per_block("feed_forward"), True),
        DiagramNode("add2", "Dropout + shortcut", "x + feed_forward(LayerNorm(x))", act, None, True, "add"),
        DiagramNode("final_norm", "Final LayerNorm", "", act, counts.final_norm, False),
        DiagramNode("out_head", "Linear output head",
                    f"{d} → {v:,}" + (" (tied to the token embedding)" if counts.tied else ""),
                    f"[B, T, {v:,}]", 0 if counts.tied else counts.output_head, False),
    ]


# ---------------------------------------------------------------- activations

@dataclass(frozen=True)
class Overview:
    """What the tab draws about a model's make-up: its config, counts and block diagram."""

    cfg: GPTConfig
    counts: ParameterBreakdown
    diagram: list[DiagramNode]


def model_overview(model: GPTModel) -> Overview:
    """Counted from the model's own modules."""
    counts = parameter_breakdown(model)
    return Overview(model.cfg, counts, architecture_diagram(model.cfg, counts))


def config_overview(cfg: GPTConfig) -> Overview:
    """Counted from a config alone (no weights are built)."""
    counts = config_parameter_breakdown(cfg)
    return Overview(cfg, counts, architecture_diagram(cfg, counts))


def activation_curves(lo: float = -3.0, hi: float = 3.0, n: int = 241) -> dict[str, np.ndarray]:
    """x, GELU(x) (the model's own module) and ReLU(x), for a plot."""
    x = torch.linspace(lo, hi, n)
    with torch.no_grad():
        return {"x": x.numpy(), "GELU": GELU()(x).numpy(), "ReLU": torch.relu(x).numpy()}


def residual_stream(trace: Trace) -> list[tuple[str, torch.Tensor]]:
    """The residual stream after each stage: the input embedding, then each block's output."""
    out = [("embeddings", trace["embed"])]
    i = 0
    while f"blocks.{i}.resid_post" in trace:
        out.append((f"after layer {i}", trace[f"blocks.{i}.resid_post"]))
        i += 1
    return out


def residual_norms(trace: Trace) -> tuple[list[str], np.ndarray]:
    """L2 norm of the residual stream per stage and position (batch row 0): [stages, T]."""
    stages = residual_stream(trace)
    norms = torch.stack([x[0].float().norm(dim=-1) for _, x in stages])
    return [name for name, _ in stages], norms.cpu().numpy().astype(np.float32)


@dataclass
class LogitLens:
    stages: list[str]          # "embeddings", "after layer 0", ... (layers counted from 0, as in the state dict)
    top_ids: np.ndarray        # [stages, T, k]
    top_probs: np.ndarray      # [stages, T, k]
    top_labels: list[list[list[str]]]
    last_logits: torch.Tensor  # [T, V] of the last stage (equals the model's logits)

    def top(self, k: int) -> "LogitLens":
        """The same lens keeping only the first k guesses (a lens made with a larger k)."""
        k = max(1, min(int(k), self.top_ids.shape[-1]))
        return LogitLens(self.stages, self.top_ids[..., :k], self.top_probs[..., :k],
                         [[pos[:k] for pos in stage] for stage in self.top_labels], self.last_logits)


def logit_lens(model: GPTModel, tokenizer, trace: Trace, k: int = 5) -> LogitLens:
    """Decode every stage of the residual stream as if it were the last: final_norm, then
    out_head, then softmax (batch row 0). Only the top k per position is kept."""
    names, ids_all, probs_all, logits = [], [], [], None
    k = max(1, min(int(k), model.out_head.weight.shape[0]))
    with torch.no_grad():
        for name, resid in residual_stream(trace):
            logits = model.out_head(model.final_norm(resid[0])).float()
            top, ids = logits.topk(k, dim=-1)
            probs = torch.exp(top - torch.logsumexp(logits, dim=-1, keepdim=True))  # softmax of the top k only
            names.append(name)
            ids_all.append(ids.cpu())
            probs_all.append(probs.cpu())
    top_ids = torch.stack(ids_all).numpy()
    labels = [[[token_label(tokenizer, i) for i in pos] for pos in stage] for stage in top_ids.tolist()]
    return LogitLens(names, top_ids, torch.stack(probs_all).numpy().astype(np.float32), labels,
                     logits.detach().cpu())


@dataclass
class LayerNormDemo:
    where: str
    before: np.ndarray         # the activation entering the norm
    normalised: np.ndarray     # a fresh LayerNorm (scale 1, shift 0): mean 0, variance 1
    after: np.ndarray          # the model's trained norm (its own scale and shift)
    stats: dict[str, tuple[float, float]]   # name -> (mean, biased variance)


def _norm_site(model: GPTModel, trace: Trace, layer: int, which: str):
    if which == "final":
        last = len(model.trf_blocks) - 1
        return "final LayerNorm", model.final_norm, trace[f"blocks.{last}.resid_post"]
    if not 0 <= layer < len(model.trf_blocks):
        raise ValueError(f"layer must be between 0 and {len(model.trf_blocks) - 1}")
    block = model.trf_blocks[layer]
    if which == "norm1":
        return f"layer {layer}, LayerNorm 1", block.norm1, trace[f"blocks.{layer}.resid_pre"]
    if which == "norm2":
        return f"layer {layer}, LayerNorm 2", block.norm2, trace[f"blocks.{layer}.resid_mid"]
    raise ValueError("which must be 'norm1', 'norm2' or 'final'")


def layernorm_demo(model: GPTModel, trace: Trace, layer: int = 0, position: int = -1,
                   which: str = "norm1") -> LayerNormDemo:
    """What a LayerNorm does to one real activation vector of the traced pass."""
    where, norm, x_all = _norm_site(model, trace, layer, which)
    t = x_all.shape[1]
    if not -t <= position < t:
        raise ValueError(f"position must be between 0 and {t - 1}")
    x = x_all[0, position].float()
    with torch.no_grad():
        fresh = LayerNorm(x.shape[-1], eps=norm.eps).to(x.device)
        normalised = fresh(x)
        after = norm(x_all[0, position]).float()

    def stats(v):
        return float(v.mean()), float(v.var(unbiased=False))

    return LayerNormDemo(f"{where}, position {position % t}", x.cpu().numpy(), normalised.cpu().numpy(),
                         after.cpu().numpy(),
                         {"before": stats(x), "normalised": stats(normalised), "after scale & shift": stats(after)})


@dataclass
class PromptView:
    """What the tab draws for one prompt through the model: the residual stream's size per stage,
    the logit lens, one LayerNorm at work, and the model's prediction at the chosen position."""

    ids: list[int]
    labels: list[str]          # one per token
    position: int              # 0..T-1
    trace: Trace
    stages: list[str]
    norms: np.ndarray          # [stages, T]
    lens: LogitLens            # cut to the top-k asked for
    layernorm: LayerNormDemo
    predicted: int             # the model's top next token at ``position``
    predicted_label: str


def prompt_view(model: GPTModel, tokenizer, ids: list[int], top_k: int, layer: int, position: int,
                which: str, cache_name: str | None = None, max_top_k: int | None = None) -> PromptView:
    """One traced pass of ``ids`` (kept in the trace cache under ``cache_name``) read for the tab;
    the logit lens is decoded for ``max_top_k`` guesses once and cut to ``top_k``."""
    def cached(kind: str, compute):
        return compute() if cache_name is None else TRACES.get_or_compute(cache_name, model, ids, kind, compute)

    trace = cached("trace", lambda: model.run_with_trace(torch.tensor([ids], device=model.device)))
    # Decoding every stage is the costly part (stages × positions × vocabulary): kept with the trace.
    full_lens = cached("lens", lambda: logit_lens(model, tokenizer, trace, max_top_k or top_k))
    stages, norms = residual_norms(trace)
    p = position % len(ids)
    predicted = int(trace["logits"][0, p].argmax())
    return PromptView(ids=list(ids), labels=[token_label(tokenizer, i) for i in ids], position=p, trace=trace,
                      stages=stages, norms=norms, lens=full_lens.top(top_k),
                      layernorm=layernorm_demo(model, trace, layer, position, which),
                      predicted=predicted, predicted_label=token_label(tokenizer, predicted))
