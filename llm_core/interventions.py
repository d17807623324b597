"""Touching the inside: knock out heads, patch activations, attribute a prediction.

Everything goes through the model's named hook points (``llm_core.model``): a hook
reads or replaces the value at ``blocks.{i}.attn.head_out``, ``blocks.{i}.resid_pre``
and so on, so nothing here reaches into the modules' code.

- ``ablate_heads``: the logits with some heads' outputs zeroed (or set to their mean
  over the prompt's positions);
- ``patch_activation``: run a corrupted prompt with one activation taken from the clean run;
- ``head_attribution``: for every head, how the target token's log-probability changes
  when that head alone is ablated (one batched pass per layer, from that layer on);
- ``patching_map``: layers × positions, how much of the clean answer patching the
  clean residual stream in at that layer and position restores;
- ``direct_logit_attribution``: the target's logit split into what each head, each MLP
  and the embeddings add to the final residual stream, the final LayerNorm's scale frozen.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch

from .model import GPTModel, Trace

ABLATION_MODES = ("zero", "mean")
PATCH_SITES = {  # a site's hook name inside block i, and what it means
    "resid_pre": "the whole residual stream entering the layer",
    "attn.out": "the attention output of the layer",
    "ff.out": "the MLP (feed-forward) output of the layer",
}
MAX_BATCH_TOKENS = 8192   # rows × positions per batched pass: bounds memory, keeps the CPU busy
# Work one request may ask for, in multiply-adds of the blocks: what head_attribution
# costs on GPT-2 small with 24 tokens (about ten seconds on two CPU cores).
MAX_WORK = 12 * 78 * 24 * 12 * 768 ** 2


def _block_work(cfg) -> int:
    return 12 * cfg.emb_dim ** 2   # multiply-adds per token per block (attention 4d², MLP 8d²)


def attribution_token_limit(cfg, cap: int | None = None) -> int:
    """The longest prompt ``head_attribution`` takes for this config within ``MAX_WORK``:
    a batch per layer of one copy per head, each running the layers from there on."""
    per_token = cfg.n_heads * cfg.n_layers * (cfg.n_layers + 1) // 2 * _block_work(cfg)
    limit = max(1, MAX_WORK // per_token)
    return min(limit, cfg.context_length, cap or limit)


def patching_token_limit(cfg, cap: int | None = None) -> int:
    """The longest prompt pair ``patching_map`` takes: one row per position per layer."""
    per_token_sq = cfg.n_layers * (cfg.n_layers + 1) // 2 * _block_work(cfg)
    limit = max(1, int((MAX_WORK // per_token_sq) ** 0.5))
    return min(limit, cfg.context_length, cap or limit)


class InterventionError(ValueError):
    """Inputs an intervention cannot use, with a message fit for the UI."""


def _model(bundle) -> GPTModel:
    return getattr(bundle, "model", bundle)


def _ids(model: GPTModel, ids) -> torch.Tensor:
    """A list, [T] or [1, T] of token ids → LongTensor [1, T] on the model's device."""
    t = torch.as_tensor(ids, dtype=torch.long, device=model.device)
    if t.dim() == 1:
        t = t.unsqueeze(0)
    if t.dim() != 2 or t.shape[0] != 1 or t.shape[1] == 0:
        raise InterventionError("expected one non-empty prompt of token ids")
    if t.shape[1] > model.cfg.context_length:
        raise InterventionError(f"{t.shape[1]} tokens exceed the context length {model.cfg.context_length}")
    if int(t.max()) >= model.cfg.vocab_size or int(t.min()) < 0:
        raise InterventionError("a token id is outside the model's vocabulary")
    return t


def _check_heads(model: GPTModel, heads: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    cfg, out = model.cfg, []
    for layer, head in heads:
        layer, head = int(layer), int(head)
        if not (0 <= layer < cfg.n_layers and 0 <= head < cfg.n_heads):
            raise InterventionError(f"layer {layer} head {head} does not exist: layers 0 to {cfg.n_layers - 1}, "
                                    f"heads 0 to {cfg.n_heads - 1}")
        if (layer, head) not in out:
            out.append((layer, head))
    return out


def _check_mode(mode: str) -> str:
    if mode not in ABLATION_MODES:
        raise InterventionError(f"ablation mode must be one of {', '.join(ABLATION_MODES)} (got {mode!r})")
    return mode


def _capture(names: Iterable[str]) -> tuple[dict, dict]:
    """Hooks that only read: {name: fn}, and the dict they fill."""
    seen: dict[str, torch.Tensor] = {}

    def reader(name):
        def fn(value):
            seen[name] = value.detach()
        return fn
    return {n: reader(n) for n in names}, seen


def head_means(model: GPTModel, ids: torch.Tensor, layers: Iterable[int]) -> dict[int, torch.Tensor]:
    """Each head's output averaged over the prompt's positions: layer → [H, hd]."""
    hooks, seen = _capture(f"blocks.{i}.attn.head_out" for i in set(layers))
    model.run_with_hooks(ids, hooks)
    return {int(name.split(".")[1]): v[0].mean(dim=1) for name, v in seen.items()}


def ablation_hooks(model: GPTModel, ids: torch.Tensor, heads, mode: str = "zero") -> dict:
    """Hooks replacing the chosen heads' outputs by zero or by their mean (``head_means``)."""
    heads, mode = _check_heads(model, heads), _check_mode(mode)
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)
    means = head_means(model, ids, by_layer) if mode == "mean" and by_layer else {}

    def replace(layer, chosen):
        def fn(value):  # [B, H, T, hd]
            out = value.clone()
            out[:, chosen] = 0.0 if mode == "zero" else means[layer][chosen].unsqueeze(1).to(out.dtype)
            return out
        return fn
    return {f"blocks.{layer}.attn.head_out": replace(layer, chosen) for layer, chosen in by_layer.items()}


def ablate_heads(bundle, ids, heads, mode: str = "zero") -> torch.Tensor:
    """Logits [1, T, V] with the heads ``[(layer, head), ...]`` knocked out.

    ``zero``: the head's output (its slice of the input to ``out_proj``) becomes 0;
    ``mean``: it becomes the head's mean output over this prompt's positions, so the
    layer still gets a typical value but no information about the particular token.
    """
    model = _model(bundle)
    ids = _ids(model, ids)
    with torch.no_grad():
        return model.run_with_hooks(ids, ablation_hooks(model, ids, heads, mode))


def _clean_and_corrupt(model: GPTModel, clean_ids, corrupt_ids) -> tuple[torch.Tensor, torch.Tensor]:
    """The two prompts of a patching experiment as [1, T] tensors; they must be equally long."""
    clean, corrupt = _ids(model, clean_ids), _ids(model, corrupt_ids)
    if clean.shape != corrupt.shape:
        raise InterventionError(f"the clean prompt has {clean.shape[1]} tokens and the corrupted one "
                                f"{corrupt.shape[1]}: patching needs the same number of positions")
    return clean, corrupt


def _position_axis(hook: str) -> int:
    """Where the positions are in a named activation: [B, H, T, …] in attention, else [B, T, d]."""
    return 2 if hook.split(".")[-1] in ("q", "k", "v", "scores", "weights", "head_out") else 1


def patch_activation(bundle, clean_ids, corrupt_ids, hook: str, position: int | None = None) -> torch.Tensor:
    """Logits [1, T, V] of the corrupted prompt with the activation at ``hook`` (all
    positions, or only ``position``) replaced by its value in the clean run."""
    model = _model(bundle)
    clean, corrupt = _clean_and_corrupt(model, clean_ids, corrupt_ids)
    reader, seen = _capture([hook])
    with torch.no_grad():
        model.run_with_hooks(clean, reader)
        if hook not in seen:
            raise InterventionError(f"no hook point is called {hook!r}")
        axis = _position_axis(hook)
        t = seen[hook].shape[axis]
        if position is not None and not -t <= position < t:
            raise InterventionError(f"position {position} is outside 0..{t - 1}")

        def write(value):
            if position is None:
                return seen[hook]
            out = value.clone()
            idx = [slice(None)] * out.dim()
            idx[axis] = position
            out[tuple(idx)] = seen[hook][tuple(idx)]
            return out
        return model.run_with_hooks(corrupt, {hook: write})


def _run_from(model: GPTModel, x: torch.Tensor, start: int, hooks: dict, position: int) -> torch.Tensor:
    """Blocks ``start``… on residual streams x [B, T, d], then the head at one position: [B, V]."""
    for i in range(start, model.cfg.n_layers):
        x = model.trf_blocks[i](x, layer=i, hooks=hooks)
    return model.out_head(model.final_norm(x[:, position])).float()


def _chunks(n_rows: int, t: int):
    size = max(1, MAX_BATCH_TOKENS // max(t, 1))
    for lo in range(0, n_rows, size):
        yield lo, min(n_rows, lo + size)


def _check_token(model: GPTModel, token: int) -> int:
    token = int(token)
    if not 0 <= token < model.cfg.vocab_size:
        raise InterventionError(f"token id {token} is outside the vocabulary (0 to {model.cfg.vocab_size - 1})")
    return token


@dataclass
class HeadAttribution:
    target: int
    position: int
    clean_logprob: float
    delta: torch.Tensor        # [layers, heads]: log p(target) with the head ablated − clean


def head_attribution(bundle, ids, target_token: int, mode: str = "zero", position: int = -1) -> HeadAttribution:
    """For every head, the change in log p(target) at ``position`` when that head alone is ablated.

    One clean pass keeps each layer's incoming residual stream; then, per layer, one
    batch holds a copy of that stream per head and runs only the layers from there on,
    each copy with its own head knocked out. Negative: the head helped the target.
    """
    model = _model(bundle)
    ids, mode = _ids(model, ids), _check_mode(mode)
    target = _check_token(model, target_token)
    cfg, t = model.cfg, ids.shape[1]
    if not -t <= position < t:
        raise InterventionError(f"position {position} is outside 0..{t - 1}")
    pos = position % t
    ids = ids[:, :pos + 1]          # later positions cannot affect this one (causal)
    t = pos + 1
    hooks, seen = _capture(f"blocks.{i}.{n}" for i in range(cfg.n_layers) for n in ("resid_pre", "attn.head_out"))
    delta = torch.zeros(cfg.n_layers, cfg.n_heads)
    with torch.no_grad():
        clean_logits = model.run_with_hooks(ids, hooks)[0, -1].float()
        clean = float(torch.log_softmax(clean_logits, -1)[target])
        for layer in range(cfg.n_layers):
            x0 = seen[f"blocks.{layer}.resid_pre"]
            mean = seen[f"blocks.{layer}.attn.head_out"][0].mean(dim=1)   # [H, hd]
            for lo, hi in _chunks(cfg.n_heads, t):
                rows = torch.arange(lo, hi, device=ids.device)

                def knock_out(value, rows=rows):   # row r of the batch loses head rows[r]
                    out = value.clone()
                    r = torch.arange(len(rows), device=value.device)
                    out[r, rows] = 0.0 if mode == "zero" else mean[rows].unsqueeze(1).to(out.dtype)
                    return out
                logits = _run_from(model, x0.expand(hi - lo, -1, -1), layer,
                                   {f"blocks.{layer}.attn.head_out": knock_out}, -1)
                delta[layer, lo:hi] = (torch.log_softmax(logits, -1)[:, target] - clean).cpu()
    return HeadAttribution(target, pos, clean, delta)


@dataclass
class PatchingMap:
    site: str
    clean_token: int
    corrupt_token: int
    clean_diff: float          # logit(clean answer) − logit(corrupt answer) on the clean prompt
    corrupt_diff: float        # the same on the corrupted prompt
    restored: torch.Tensor     # [layers, T]: (patched diff − corrupt diff) / (clean diff − corrupt diff)


def patching_map(bundle, clean_ids, corrupt_ids, clean_token: int, corrupt_token: int,
                 site: str = "resid_pre") -> PatchingMap:
    """Patch the clean activation at ``site`` into the corrupted run, one layer and one
    position at a time, and measure at the last position how much of the clean logit
    difference comes back (0 = none, 1 = all of it). One batched pass per layer."""
    if site not in PATCH_SITES:
        raise InterventionError(f"site must be one of {', '.join(PATCH_SITES)} (got {site!r})")
    model = _model(bundle)
    clean, corrupt = _clean_and_corrupt(model, clean_ids, corrupt_ids)
    a, b = _check_token(model, clean_token), _check_token(model, corrupt_token)
    if a == b:
        raise InterventionError("the clean and corrupted answers are the same token: choose two different "
                                "answers (the patch measures how far the prediction moves between them)")
    cfg, t = model.cfg, clean.shape[1]
    names = [f"blocks.{i}.{n}" for i in range(cfg.n_layers) for n in {"resid_pre", site}]
    read_clean, clean_acts = _capture(names)
    read_corrupt, corrupt_acts = _capture(names)
    restored = torch.zeros(cfg.n_layers, t)
    with torch.no_grad():
        lc = model.run_with_hooks(clean, read_clean)[0, -1].float()
        lx = model.run_with_hooks(corrupt, read_corrupt)[0, -1].float()
        clean_diff, corrupt_diff = float(lc[a] - lc[b]), float(lx[a] - lx[b])
        span = clean_diff - corrupt_diff
        if abs(span) < 1e-6:
            raise InterventionError("the model gives both prompts the same logit difference, so there is "
                                    "nothing to restore: choose prompts whose answers differ")
        for layer in range(cfg.n_layers):
            name = f"blocks.{layer}.{site}"
            x0 = corrupt_acts[f"blocks.{layer}.resid_pre"]
            # Where both runs hold the same value a patch changes nothing (restored 0): skip it.
            differs = (clean_acts[name][0] != corrupt_acts[name][0]).flatten(1).any(1).nonzero().flatten()
            for lo, hi in _chunks(len(differs), t):
                cols = differs[lo:hi]

                def write(value, cols=cols, name=name):   # row r gets the clean value at position cols[r]
                    out = value.clone()
                    r = torch.arange(len(cols), device=value.device)
                    out[r, cols] = clean_acts[name][0, cols].to(out.dtype)
                    return out
                logits = _run_from(model, x0.expand(hi - lo, -1, -1), layer, {name: write}, -1)
                restored[layer, cols.cpu()] = ((logits[:, a] - logits[:, b] - corrupt_diff) / span).cpu()
    return PatchingMap(site, a, b, clean_diff, corrupt_diff, restored)


@dataclass
class LogitAttribution:
    target: int
    position: int
    logit: float               # the model's logit for the target (what the parts add up to)
    embed: float               # token + position embedding
    attn: torch.Tensor         # [layers]: each layer's attention output (heads + out_proj bias)
    heads: torch.Tensor        # [layers, heads]
    attn_bias: torch.Tensor    # [layers]: out_proj's bias
    mlp: torch.Tensor          # [layers]
    final_bias: float          # final LayerNorm's shift (and the head's bias, if any)
    scale: float               # the frozen final-LayerNorm divisor √(var + eps) at this position

    @property
    def per_layer(self) -> torch.Tensor:
        """Attention + MLP of each layer: [layers]."""
        return self.attn + self.mlp

    @property
    def total(self) -> float:
        return self.embed + float(self.per_layer.sum()) + self.final_bias


def direct_logit_attribution(model: GPTModel, trace: Trace, target: int, position: int = -1) -> LogitAttribution:
    """Split the target's logit at ``position`` into what each part writes into the residual stream.

    The final residual stream is the sum embed + Σ attn.out + Σ ff.out, and the final
    LayerNorm is linear in it once its divisor √(var + eps) is frozen at the value of this
    pass: centre each part, divide by that number, scale by LayerNorm's weight and read it
    off along the target's row of the output head. The parts then add up to the real logit.
    A head's part is its slice of ``out_proj``: head_out[h] @ W_O[:, h]ᵀ.
    """
    model = _model(model)
    cfg = model.cfg
    target = _check_token(model, target)
    t = trace["embed"].shape[1]
    if not -t <= position < t:
        raise InterventionError(f"position {position} is outside 0..{t - 1}")
    pos = position % t
    norm = model.final_norm
    w_u = model.out_head.weight[target].float()
    with torch.no_grad():
        final = trace[f"blocks.{cfg.n_layers - 1}.resid_post"][0, pos].float()
        scale = float(torch.sqrt(final.var(unbiased=False) + norm.eps))
        gain = norm.scale.float() * w_u / scale                      # [d]

        def read(vec):                                               # [..., d] -> [...]
            return (vec - vec.mean(-1, keepdim=True)) @ gain

        heads = torch.zeros(cfg.n_layers, cfg.n_heads)
        attn_bias, attn, mlp = (torch.zeros(cfg.n_layers) for _ in range(3))
        for i, block in enumerate(model.trf_blocks):
            proj = block.att.out_proj
            ho = trace[f"blocks.{i}.attn.head_out"][0, :, pos].float()   # [H, hd]
            w_o = proj.weight.float().view(cfg.emb_dim, cfg.n_heads, cfg.head_dim)  # [d, H, hd]
            per_head = torch.einsum("hk,dhk->hd", ho, w_o)                # [H, d]
            heads[i] = read(per_head).cpu()
            attn_bias[i] = float(read(proj.bias.float())) if proj.bias is not None else 0.0
            attn[i] = float(read(trace[f"blocks.{i}.attn.out"][0, pos].float()))
            mlp[i] = float(read(trace[f"blocks.{i}.ff.out"][0, pos].float()))
        final_bias = float(norm.shift.float() @ w_u)
        if model.out_head.bias is not None:
            final_bias += float(model.out_head.bias[target])
        logit = float(trace["logits"][0, pos, target]) if trace["logits"].shape[1] == t else float("nan")
        embed = float(read(trace["embed"][0, pos].float()))
    return LogitAttribution(target, pos, logit, embed, attn, heads, attn_bias, mlp, final_bias, scale)
