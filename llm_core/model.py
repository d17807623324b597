"""GPTModel from scratch, with the book's names (chapters 3-4).

One model serves every view. ``forward(ids)`` is the fast path (PyTorch's fused
``scaled_dot_product_attention``); ``forward(ids, trace=Trace())`` computes the
attention weights explicitly and records every named activation, TransformerLens
style, so the tabs read ``trace["blocks.3.attn.weights"]`` instead of reaching
into modules. ``forward(ids, kv_cache=cache)`` reuses keys/values of earlier
positions for generation.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .budget import track
from .config import GPTConfig


class Trace(dict):
    """Named activations of one forward pass (detached tensors, batch first).

    Names: ``tok_emb``, ``pos_emb``, ``embed`` [B,T,d]; per layer i:
    ``blocks.i.resid_pre``, ``blocks.i.ln1``, ``blocks.i.attn.q/k/v`` [B,H,T,hd],
    ``blocks.i.attn.scores`` (scaled, masked) and ``blocks.i.attn.weights`` [B,H,T,T],
    ``blocks.i.attn.out``, ``blocks.i.resid_mid``, ``blocks.i.ln2``, ``blocks.i.ff.out``,
    ``blocks.i.resid_post`` [B,T,d]; then ``ln_f`` [B,T,d] and ``logits`` [B,T,V].
    """

    def record(self, name: str, value: torch.Tensor) -> None:
        self[name] = value.detach()


class KVCache:
    """Pre-allocated per-layer key/value buffers [B, H, context, head_dim]."""

    def __init__(self, cfg: GPTConfig, batch_size: int = 1, device=None, dtype=torch.float32):
        shape = (cfg.n_layers, batch_size, cfg.n_heads, cfg.context_length, cfg.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0  # positions filled so far

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        t = k.shape[2]
        start = self.length
        self.k[layer, :, :, start:start + t] = k
        self.v[layer, :, :, start:start + t] = v
        return self.k[layer, :, :, :start + t], self.v[layer, :, :, :start + t]

    def crop(self, length: int) -> None:
        self.length = min(self.length, length)


class LayerNorm(nn.Module):
    """Normalise each vector to mean 0, variance 1 (biased), then scale and shift."""

    def __init__(self, emb_dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(emb_dim))
        self.shift = nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x):
        # Same maths as the book's mean/var formula, in one fused kernel.
        return F.layer_norm(x, x.shape[-1:], self.scale, self.shift, self.eps)


class GELU(nn.Module):
    """0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), the approximation GPT-2 used."""

    def forward(self, x):
        return F.gelu(x, approximate="tanh")


def gelu_formula(x: torch.Tensor) -> torch.Tensor:
    """The tanh approximation written out, as in the book (used by tests and plots)."""
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


class FeedForward(nn.Module):
    """emb_dim → 4·emb_dim → GELU → emb_dim."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(cfg.emb_dim, 4 * cfg.emb_dim),
            GELU(),
            nn.Linear(4 * cfg.emb_dim, cfg.emb_dim),
        )

    def forward(self, x):
        return self.layers(x)


class MultiHeadAttention(nn.Module):
    """Causal multi-head self-attention (chapter 3)."""

    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        assert d_out % num_heads == 0, "d_out must be divisible by num_heads"
        self.d_out = d_out
        self.num_heads = num_heads
        self.head_dim = d_out // num_heads
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        # True above the diagonal: position i may not look at j > i.
        self.register_buffer(
            "mask", torch.triu(torch.ones(context_length, context_length, dtype=torch.bool), diagonal=1),
            persistent=False,
        )

    def _split_heads(self, x):  # [B, T, d_out] -> [B, H, T, hd]
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x, kv_cache: KVCache | None = None, layer: int = 0,
                trace: Trace | None = None, prefix: str = ""):
        b, t, _ = x.shape
        q = self._split_heads(self.W_query(x))
        k = self._split_heads(self.W_key(x))
        v = self._split_heads(self.W_value(x))
        past = 0
        if kv_cache is not None:
            past = kv_cache.length
            k, v = kv_cache.update(layer, k, v)
        p = self.dropout.p if self.training else 0.0

        if trace is None:
            if past == 0:
                ctx = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
            elif t == 1:  # one new query sees every cached key: no mask needed
                ctx = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
            else:
                allowed = ~self.mask[past:past + t, :past + t]
                ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=p)
        else:
            # In place on the fresh score tensor: no extra [B, H, T, T] copies per layer.
            scores = (q @ k.transpose(2, 3)).div_(math.sqrt(self.head_dim))  # [B, H, T, past+T]
            scores.masked_fill_(self.mask[past:past + t, :past + t], float("-inf"))
            weights = torch.softmax(scores, dim=-1)
            trace.record(prefix + "q", q)
            trace.record(prefix + "k", k)
            trace.record(prefix + "v", v)
            trace.record(prefix + "scores", scores)
            trace.record(prefix + "weights", weights)
            ctx = self.dropout(weights) @ v
        ctx = ctx.transpose(1, 2).reshape(b, t, self.d_out)
        return self.out_proj(ctx)


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block: x + attn(norm1(x)), then x + ff(norm2(x))."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.att = MultiHeadAttention(cfg.emb_dim, cfg.emb_dim, cfg.context_length,
                                      cfg.drop_rate, cfg.n_heads, cfg.qkv_bias)
        self.ff = FeedForward(cfg)
        self.norm1 = LayerNorm(cfg.emb_dim)
        self.norm2 = LayerNorm(cfg.emb_dim)
        self.drop_shortcut = nn.Dropout(cfg.drop_rate)

    def forward(self, x, kv_cache=None, layer: int = 0, trace: Trace | None = None):
        name = f"blocks.{layer}."
        h = self.norm1(x)
        a = self.att(h, kv_cache=kv_cache, layer=layer, trace=trace, prefix=name + "attn.")
        mid = x + self.drop_shortcut(a)
        h2 = self.norm2(mid)
        f = self.ff(h2)
        out = mid + self.drop_shortcut(f)
        if trace is not None:
            trace.record(name + "resid_pre", x)
            trace.record(name + "ln1", h)
            trace.record(name + "attn.out", a)
            trace.record(name + "resid_mid", mid)
            trace.record(name + "ln2", h2)
            trace.record(name + "ff.out", f)
            trace.record(name + "resid_post", out)
        return out


class GPTModel(nn.Module):
    """Token + absolute position embeddings → N blocks → final norm → output head."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
        self.pos_emb = nn.Embedding(cfg.context_length, cfg.emb_dim)
        self.drop_emb = nn.Dropout(cfg.drop_rate)
        self.trf_blocks = nn.ModuleList([TransformerBlock(cfg) for _ in range(cfg.n_layers)])
        self.final_norm = LayerNorm(cfg.emb_dim)
        self.out_head = nn.Linear(cfg.emb_dim, cfg.vocab_size, bias=False)
        if cfg.tie_weights:
            self.out_head.weight = self.tok_emb.weight
        track(self)

    def __setstate__(self, state):  # copy.deepcopy builds models this way: count those too
        super().__setstate__(state)
        track(self)

    def forward(self, in_idx: torch.Tensor, *, kv_cache: KVCache | None = None,
                trace: Trace | None = None, last_only: bool = False) -> torch.Tensor:
        """ids [B, T] -> logits [B, T, V]; with ``last_only``, [B, 1, V] for the last position
        only (all decoding needs: the output head is the largest matmul of a prompt pass)."""
        b, t = in_idx.shape
        past = kv_cache.length if kv_cache is not None else 0
        if past + t > self.cfg.context_length:
            raise ValueError(f"{past + t} positions exceed the context length {self.cfg.context_length}")
        tok = self.tok_emb(in_idx)
        pos = self.pos_emb(torch.arange(past, past + t, device=in_idx.device))
        x = tok + pos
        if trace is not None:
            trace.record("tok_emb", tok)
            trace.record("pos_emb", pos.unsqueeze(0).expand(b, -1, -1))
            trace.record("embed", x)
        x = self.drop_emb(x)
        for i, block in enumerate(self.trf_blocks):
            x = block(x, kv_cache=kv_cache, layer=i, trace=trace)
        if kv_cache is not None:
            kv_cache.length = past + t
        if last_only:
            x = x[:, -1:, :]
        x = self.final_norm(x)
        logits = self.out_head(x)
        if trace is not None:
            trace.record("ln_f", x)
            trace.record("logits", logits)
        return logits

    def run_with_trace(self, in_idx: torch.Tensor) -> Trace:
        """One forward pass that records every named activation (no gradients)."""
        trace = Trace()
        with torch.no_grad():
            self.forward(in_idx, trace=trace)
        return trace

    def new_kv_cache(self, batch_size: int = 1) -> KVCache:
        p = self.tok_emb.weight
        return KVCache(self.cfg, batch_size, device=p.device, dtype=p.dtype)

    @property
    def device(self) -> torch.device:
        return self.tok_emb.weight.device

    def num_parameters(self) -> int:
        """Unique parameters (a tied head is counted once)."""
        return sum(p.numel() for p in self.parameters())


def build_untrained(cfg: GPTConfig, seed: int = 123) -> GPTModel:
    """A randomly initialised model (the book's "before training" view), seeded locally."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPTModel(cfg)
    return model.eval()
