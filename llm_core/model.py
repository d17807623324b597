"""GPTModel from scratch, with the book's names (chapters 3-4).

One model serves every view. ``forward(ids)`` is the fast path (PyTorch's fused
``scaled_dot_product_attention``); ``forward(ids, trace=Trace())`` computes the
attention weights explicitly and records every named activation, TransformerLens
style, so the tabs read ``trace["blocks.3.attn.weights"]`` instead of reaching
into modules. ``forward(ids, hooks={name: fn})`` calls ``fn(value)`` at each named
point and carries on with what it returns (``None`` keeps the value): the same names
read and write. ``forward(ids, kv_cache=cache)`` reuses keys/values of earlier
positions for generation.

Named points: one scheme for trace keys and hooks (``i`` is the layer, counted
from 0 as in the state dict's ``trf_blocks.{i}``)::

    name                      shape          computed by (state-dict prefix)
    tok_emb                   [B, T, d]      tok_emb
    pos_emb                   [B, T, d]      pos_emb
    embed                     [B, T, d]      tok_emb + pos_emb (the residual stream enters block 0)
    blocks.{i}.resid_pre      [B, T, d]      input of trf_blocks.{i}
    blocks.{i}.ln1            [B, T, d]      trf_blocks.{i}.norm1
    blocks.{i}.attn.q/k/v     [B, H, T, hd]  trf_blocks.{i}.att.W_query / W_key / W_value, split into heads
    blocks.{i}.attn.scores    [B, H, T, T]   q·kᵀ/√hd, causal mask applied (−∞)
    blocks.{i}.attn.weights   [B, H, T, T]   softmax of the scores
    blocks.{i}.attn.head_out  [B, H, T, hd]  weights @ v: each head's output, input of att.out_proj
    blocks.{i}.attn.out       [B, T, d]      trf_blocks.{i}.att.out_proj (all heads mixed)
    blocks.{i}.resid_mid      [B, T, d]      resid_pre + attn.out
    blocks.{i}.ln2            [B, T, d]      trf_blocks.{i}.norm2
    blocks.{i}.ff.out         [B, T, d]      trf_blocks.{i}.ff (the MLP)
    blocks.{i}.resid_post     [B, T, d]      resid_mid + ff.out (= blocks.{i+1}.resid_pre)
    ln_f                      [B, T, d]      final_norm
    logits                    [B, T, V]      out_head

A hook on ``attn.scores`` or ``attn.weights`` (or a trace) switches that layer to the
explicit attention maths; every other hook keeps the fused kernel, and with no hook
and no trace the fast path is exactly what it was.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Callable, Iterator, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from .budget import track
from .config import GPTConfig


# A hook gets the value at its point and returns a replacement, or None to keep it.
Hook = Callable[[torch.Tensor], "torch.Tensor | None"]
Hooks = Mapping[str, Hook]
EXPLICIT_ATTENTION_POINTS = ("scores", "weights")  # hooks here need the weights computed


class Trace(dict):
    """Named activations of one forward pass (detached tensors, batch first); the names
    are listed in this module's docstring (``hook_point_names`` gives them for a config)."""

    def record(self, name: str, value: torch.Tensor) -> None:
        self[name] = value.detach()


def _point(name: str, value: torch.Tensor, trace: Trace | None, hooks: Hooks | None) -> torch.Tensor:
    """A named point: a hook may replace the value, then the trace records what flows on."""
    if hooks:
        fn = hooks.get(name)
        if fn is not None:
            out = fn(value)
            if out is not None:
                if out.shape != value.shape:
                    raise ValueError(f"the hook at {name} returned shape {tuple(out.shape)}, "
                                     f"expected {tuple(value.shape)}")
                value = out
    if trace is not None:
        trace.record(name, value)
    return value


def hook_point_names(cfg: GPTConfig) -> list[str]:
    """Every named point of a model with this config, in the order the forward pass meets them."""
    names = ["tok_emb", "pos_emb", "embed"]
    for i in range(cfg.n_layers):
        b = f"blocks.{i}."
        names += [b + "resid_pre", b + "ln1", b + "attn.q", b + "attn.k", b + "attn.v", b + "attn.scores",
                  b + "attn.weights", b + "attn.head_out", b + "attn.out", b + "resid_mid", b + "ln2",
                  b + "ff.out", b + "resid_post"]
    return names + ["ln_f", "logits"]


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


DROPOUT_CHUNK = 128  # query rows per block of causal_dropout_attention


def causal_dropout_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p: float,
                             mask: torch.Tensor, chunk: int = DROPOUT_CHUNK) -> torch.Tensor:
    """Causal attention with dropout on the weights, for training on the CPU: what
    ``scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)`` computes there.

    With dropout, PyTorch's CPU kernel falls back to plain maths over the whole [T, T] score
    matrix, half of it masked. Here each block of ``chunk`` query rows only meets the keys it
    may see, so the matmuls, softmax and dropout touch a little over half the entries (1.8x
    faster at context 1024, see benchmarks/bench_train.py). The dropout mask is drawn as
    ``F.dropout`` draws it (one ``bernoulli_`` over [B, H, T, T], scaled by 1/(1-p)), so the
    random stream and the kept weights are the same as the fused call's and the book's."""
    b, h, t, hd = q.shape
    keep = torch.empty(b, h, t, t, dtype=q.dtype, device=q.device).bernoulli_(1 - p).div_(1 - p)
    q = q * (1.0 / math.sqrt(hd))
    out = []
    for start in range(0, t, chunk):
        end = min(start + chunk, t)
        scores = q[:, :, start:end] @ k[:, :, :end].transpose(2, 3)   # [B, H, rows, keys up to end]
        scores.masked_fill_(mask[start:end, :end], float("-inf"))
        out.append((torch.softmax(scores, dim=-1) * keep[:, :, start:end, :end]) @ v[:, :, :end])
    return torch.cat(out, dim=2)


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

    def place_qkv_side_by_side(self) -> bool:
        """Store W_query, W_key and W_value (and their biases) in one input-major buffer
        [d_in, 3·d_out], so that inference reads all three with one matmul (one kernel
        streaming one matrix instead of three). Names, shapes and values stay; the three
        weights become views of that buffer. For inference-only models (see
        ``generation.prepare_for_decoding``); True when it changed the layout."""
        lins = (self.W_query, self.W_key, self.W_value)
        if any(type(m) is not nn.Linear for m in lins) or self.fused_qkv() is not None:
            return False
        d = self.d_out
        with torch.no_grad():
            w = torch.cat([m.weight.detach().t() for m in lins], dim=1)
            b = None if lins[0].bias is None else torch.cat([m.bias.detach() for m in lins])
        for i, m in enumerate(lins):
            m.weight = nn.Parameter(w[:, i * d:(i + 1) * d].t(), requires_grad=m.weight.requires_grad)
            if b is not None:
                m.bias = nn.Parameter(b[i * d:(i + 1) * d], requires_grad=m.bias.requires_grad)
        return True

    def fused_qkv(self):
        """(weight [3·d_out, d_in], bias [3·d_out] or None) spanning W_query|W_key|W_value
        when they sit side by side in one buffer (``place_qkv_side_by_side``), else None.
        Checked on every call, so a model copied or moved (to another device, to int8,
        with LoRA) simply takes the three separate matmuls."""
        q, k, v = self.W_query, self.W_key, self.W_value
        if type(q) is not nn.Linear or type(k) is not nn.Linear or type(v) is not nn.Linear:
            return None
        wq, wk, wv = q.weight, k.weight, v.weight
        d, d_in = wq.shape
        step = d * wq.element_size()
        strides = (1, 3 * d)
        if (wq.stride() != strides or wk.stride() != strides or wv.stride() != strides
                or wk.data_ptr() != wq.data_ptr() + step or wv.data_ptr() != wq.data_ptr() + 2 * step
                or wq.untyped_storage().data_ptr() != wv.untyped_storage().data_ptr()):
            return None
        bq, bk, bv = q.bias, k.bias, v.bias
        if bq is None:
            return (wq.as_strided((3 * d, d_in), strides), None) if bk is None and bv is None else None
        if (bk is None or bv is None or bk.data_ptr() != bq.data_ptr() + step
                or bv.data_ptr() != bq.data_ptr() + 2 * step
                or bq.untyped_storage().data_ptr() != bv.untyped_storage().data_ptr()):
            return None
        return wq.as_strided((3 * d, d_in), strides), bq.as_strided((3 * d,), (1,))

    def forward(self, x, kv_cache: KVCache | None = None, layer: int = 0,
                trace: Trace | None = None, prefix: str = "", hooks: Hooks | None = None):
        b, t, _ = x.shape
        fused = None if torch.is_grad_enabled() else self.fused_qkv()
        if fused is not None:  # one matmul for all three (inference on a prepared model)
            q, k, v = (self._split_heads(z) for z in F.linear(x, *fused).split(self.d_out, dim=-1))
        else:
            q = self._split_heads(self.W_query(x))
            k = self._split_heads(self.W_key(x))
            v = self._split_heads(self.W_value(x))
        past = 0
        if kv_cache is not None:
            past = kv_cache.length
            k, v = kv_cache.update(layer, k, v)
        p = self.dropout.p if self.training else 0.0
        if hooks:
            q, k, v = (_point(prefix + n, z, None, hooks) for n, z in (("q", q), ("k", k), ("v", v)))
        explicit = trace is not None or bool(hooks) and any(prefix + n in hooks for n in EXPLICIT_ATTENTION_POINTS)

        if not explicit:
            if past == 0 and p > 0 and t >= 2 * DROPOUT_CHUNK and q.device.type == "cpu":
                ctx = causal_dropout_attention(q, k, v, p, self.mask)
            elif past == 0:
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
            if trace is not None:
                trace.record(prefix + "q", q)
                trace.record(prefix + "k", k)
                trace.record(prefix + "v", v)
            scores = _point(prefix + "scores", scores, trace, hooks)
            weights = _point(prefix + "weights", torch.softmax(scores, dim=-1), trace, hooks)
            ctx = self.dropout(weights) @ v
        if trace is not None or hooks:
            ctx = _point(prefix + "head_out", ctx, trace, hooks)  # [B, H, T, hd]
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

    def forward(self, x, kv_cache=None, layer: int = 0, trace: Trace | None = None,
                hooks: Hooks | None = None):
        if trace is None and not hooks:  # the fast path: no names, no look-ups
            x = x + self.drop_shortcut(self.att(self.norm1(x), kv_cache=kv_cache, layer=layer))
            return x + self.drop_shortcut(self.ff(self.norm2(x)))
        name = f"blocks.{layer}."
        x = _point(name + "resid_pre", x, trace, hooks)
        h = _point(name + "ln1", self.norm1(x), trace, hooks)
        a = self.att(h, kv_cache=kv_cache, layer=layer, trace=trace, prefix=name + "attn.", hooks=hooks)
        a = _point(name + "attn.out", a, trace, hooks)
        mid = _point(name + "resid_mid", x + self.drop_shortcut(a), trace, hooks)
        h2 = _point(name + "ln2", self.norm2(mid), trace, hooks)
        f = _point(name + "ff.out", self.ff(h2), trace, hooks)
        return _point(name + "resid_post", mid + self.drop_shortcut(f), trace, hooks)


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
                trace: Trace | None = None, last_only: bool = False,
                hooks: Hooks | None = None) -> torch.Tensor:
        """ids [B, T] -> logits [B, T, V]; with ``last_only``, [B, 1, V] for the last position
        only (all decoding needs: the output head is the largest matmul of a prompt pass).
        ``hooks`` maps point names (module docstring) to functions that may replace the value."""
        b, t = in_idx.shape
        past = kv_cache.length if kv_cache is not None else 0
        if past + t > self.cfg.context_length:
            raise ValueError(f"{past + t} positions exceed the context length {self.cfg.context_length}")
        tok = self.tok_emb(in_idx)
        pos = self.pos_emb(torch.arange(past, past + t, device=in_idx.device))
        if trace is not None or hooks:
            tok = _point("tok_emb", tok, trace, hooks)
            pos = _point("pos_emb", pos.unsqueeze(0).expand(b, -1, -1), trace, hooks)
            x = _point("embed", tok + pos, trace, hooks)
        else:
            x = tok + pos
        x = self.drop_emb(x)
        for i, block in enumerate(self.trf_blocks):
            x = block(x, kv_cache=kv_cache, layer=i, trace=trace, hooks=hooks)
        if kv_cache is not None:
            kv_cache.length = past + t
        if last_only:
            x = x[:, -1:, :]
        x = self.final_norm(x)
        if trace is not None or hooks:
            x = _point("ln_f", x, trace, hooks)
            return _point("logits", self.out_head(x), trace, hooks)
        return self.out_head(x)

    def run_with_trace(self, in_idx: torch.Tensor, hooks: Hooks | None = None) -> Trace:
        """One forward pass that records every named activation (no gradients)."""
        trace = Trace()
        with torch.no_grad():
            self.forward(in_idx, trace=trace, hooks=hooks)
        return trace

    def run_with_hooks(self, in_idx: torch.Tensor, hooks: Hooks) -> torch.Tensor:
        """Logits [B, T, V] of a forward pass through ``hooks`` (no gradients)."""
        with torch.no_grad():
            return self.forward(in_idx, hooks=hooks)

    def decode_step(self) -> DecodeStep | None:
        """The fast cached one-token step (``DecodeStep``) for this model as it is now, or
        None when it is training or its blocks are not the ones ``forward`` here runs
        (torch hooks on the model itself, a subclass)."""
        plain = (type(self) is GPTModel and not self.training
                 and not (self._forward_hooks or self._forward_pre_hooks)
                 and all(type(blk) is TransformerBlock and type(blk.att) is MultiHeadAttention
                         and not any(m._forward_hooks or m._forward_pre_hooks for m in (blk, blk.att))
                         for blk in self.trf_blocks)
                 and type(self.tok_emb) is nn.Embedding and type(self.pos_emb) is nn.Embedding)
        return DecodeStep(self) if plain else None

    def new_kv_cache(self, batch_size: int = 1) -> KVCache:
        p = self.tok_emb.weight
        return KVCache(self.cfg, batch_size, device=p.device, dtype=p.dtype)

    @property
    def device(self) -> torch.device:
        return self.tok_emb.weight.device

    def num_parameters(self) -> int:
        """Unique parameters (a tied head is counted once)."""
        return sum(p.numel() for p in self.parameters())


def _as_call(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """What calling ``module`` computes, without the module call where that is plain maths:
    ``nn.Linear`` → ``F.linear`` with its tensors, ``LayerNorm`` → ``F.layer_norm``, the
    ``FeedForward`` of two such layers and ``GELU`` → those three; anything else (int8,
    LoRA, a module with torch hooks) → the module itself."""
    if module._forward_hooks or module._forward_pre_hooks:
        return module
    kind = type(module)
    if kind is nn.Linear:
        w, b = module.weight, module.bias
        return lambda x: F.linear(x, w, b)
    if kind is LayerNorm:
        shape, w, b, eps = (module.scale.shape[0],), module.scale, module.shift, module.eps
        return lambda x: F.layer_norm(x, shape, w, b, eps)
    if kind is FeedForward and len(module.layers) == 3 and type(module.layers[1]) is GELU:
        up, down = _as_call(module.layers[0]), _as_call(module.layers[2])
        return lambda x: down(F.gelu(up(x), approximate="tanh"))
    return module


class DecodeStep:
    """One cached decoding step, one new token per row: ``step(ids [B, 1], cache)`` → logits
    [B, V], the same kernels in the same order as ``GPTModel.forward(ids, kv_cache=cache,
    last_only=True)`` (so the same logits, bit for bit), with every weight gathered once per
    request instead of found through module calls and attribute look-ups on every token.
    Built by ``GPTModel.decode_step()`` for a model in eval mode and used under
    ``torch.inference_mode()`` (the q|k|v matmul is fused as in ``forward``)."""

    def __init__(self, model: "GPTModel"):
        cfg = model.cfg
        self.tok, self.pos = model.tok_emb.weight, model.pos_emb.weight
        self.heads, self.head_dim, self.d = cfg.n_heads, cfg.head_dim, cfg.emb_dim
        self.layers = []
        for blk in model.trf_blocks:
            att = blk.att
            fused = att.fused_qkv()
            if fused is not None:
                w, b = fused
                qkv = (lambda x, w=w, b=b, d=att.d_out: F.linear(x, w, b).split(d, dim=-1))
            else:
                q, k, v = _as_call(att.W_query), _as_call(att.W_key), _as_call(att.W_value)
                qkv = (lambda x, q=q, k=k, v=v: (q(x), k(x), v(x)))
            self.layers.append((_as_call(blk.norm1), qkv, _as_call(att.out_proj), _as_call(blk.norm2),
                                _as_call(blk.ff)))
        self.final_norm, self.head = _as_call(model.final_norm), _as_call(model.out_head)

    def __call__(self, ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
        b, past = ids.shape[0], cache.length
        heads, hd = self.heads, self.head_dim
        x = F.embedding(ids, self.tok) + self.pos[past]
        for i, (norm1, qkv, out_proj, norm2, ff) in enumerate(self.layers):
            q, k, v = (z.view(b, 1, heads, hd).transpose(1, 2) for z in qkv(norm1(x)))
            k, v = cache.update(i, k, v)
            ctx = F.scaled_dot_product_attention(q, k, v)  # one query sees every cached key
            x = x + out_proj(ctx.transpose(1, 2).reshape(b, 1, self.d))
            x = x + ff(norm2(x))
        cache.length = past + 1
        return self.head(self.final_norm(x))[:, -1, :]


def build_untrained(cfg: GPTConfig, seed: int = 123) -> GPTModel:
    """A randomly initialised model (the book's "before training" view), seeded locally."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPTModel(cfg)
    return model.eval()


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Dropout off for the block: a model in training mode is switched to eval and back after."""
    was_training = model.training
    if was_training:
        model.eval()
    try:
        yield model
    finally:
        if was_training:
            model.train()
