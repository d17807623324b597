"""The memory budget: how big a model may be, checked from its config before a tensor exists.

Every GPTModel the process holds is tracked (weakly): the shared cache, the Embeddings tab's
untrained twins, fine-tune copies, chat models, a run being pre-trained. Before a new model is
built, ``reserve`` checks that its weights fit beside everything held; the model cache is asked to
drop least recently used models first (they reload on demand), and what still does not fit is
refused with a message that gives the size and the limit.

Limits: ``LLM_EXPLORER_MAX_PARAMS`` (one model's parameters) and ``LLM_EXPLORER_CACHE_GB`` (all
models together, default 8, never more than 3/4 of the machine's memory).
"""
from __future__ import annotations

import math
import os
import threading
import weakref
from contextlib import contextmanager
from typing import Callable

from .config import GPTConfig

# Shapes beyond these are not GPTs this app can show or run, whatever the memory.
STRUCTURE_LIMITS = {"vocab_size": 1_000_000, "context_length": 32_768, "emb_dim": 16_384,
                    "n_heads": 256, "n_layers": 128}
BYTES_PER_PARAM = 4  # fp32
GB = 2**30


class BudgetError(ValueError):
    """A model that does not fit (message gives the size and the limit)."""


def machine_memory_bytes() -> int:
    try:
        import psutil
        return int(psutil.virtual_memory().total)
    except Exception:  # no psutil: trust the configured budget alone
        return 2**62


def budget_bytes() -> int:
    """Bytes of weights all held models may use together."""
    configured = float(os.environ.get("LLM_EXPLORER_CACHE_GB", "8")) * GB
    return int(min(configured, 0.75 * machine_memory_bytes()))


def max_params() -> int:
    """Parameters one model may have."""
    by_memory = budget_bytes() // BYTES_PER_PARAM
    env = os.environ.get("LLM_EXPLORER_MAX_PARAMS")
    if env:
        try:
            return min(int(float(env)), by_memory)
        except ValueError:
            pass
    return by_memory


# ---------------------------------------------------------------- configs from strangers

def _as_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BudgetError(f"{name} must be a whole number (got {_short(value)})")
    if isinstance(value, float) and (not math.isfinite(value) or value != int(value)):
        raise BudgetError(f"{name} must be a whole number (got {value!r})")
    return int(value)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def config_from_dict(d) -> GPTConfig:
    """A GPTConfig from untrusted JSON: types, ranges and structure checked; messages fit for the UI."""
    if not isinstance(d, dict):
        raise BudgetError(f"the model config must be a JSON object (got {type(d).__name__})")
    clean = {}
    for name in ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers"):
        if name not in d:
            raise BudgetError(f"the model config has no {name}")
        v = _as_int(name, d[name])
        if v < 1:
            raise BudgetError(f"{name} must be at least 1 (got {v})")
        if v > STRUCTURE_LIMITS[name]:
            raise BudgetError(f"{name} is {v:,}; this app handles at most {STRUCTURE_LIMITS[name]:,}")
        clean[name] = v
    if "drop_rate" in d:
        rate = d["drop_rate"]
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
            raise BudgetError(f"drop_rate must be a number in [0, 1) (got {_short(rate)})")
        clean["drop_rate"] = float(rate)
    for name in ("qkv_bias", "tie_weights"):
        if name in d:
            if not isinstance(d[name], bool):
                raise BudgetError(f"{name} must be true or false (got {_short(d[name])})")
            clean[name] = d[name]
    try:
        return GPTConfig(**clean)
    except ValueError as exc:
        raise BudgetError(str(exc)) from None


def check_structure(cfg: GPTConfig) -> None:
    for name, limit in STRUCTURE_LIMITS.items():
        v = getattr(cfg, name)
        if v > limit:
            raise BudgetError(f"{name} is {v:,}; this app handles at most {limit:,}")


def param_count(cfg: GPTConfig) -> int:
    from .views.architecture_view import config_parameter_breakdown
    return config_parameter_breakdown(cfg).total


def human_bytes(n: float) -> str:
    return f"{n / GB:.1f} GB" if n >= GB / 10 else f"{n / 2**20:.0f} MB"


def fits(cfg: GPTConfig) -> bool:
    """Whether a model of this config could ever load here (for labelling presets)."""
    return param_count(cfg) <= max_params()


# ---------------------------------------------------------------- what the process holds

_held: "weakref.WeakSet" = weakref.WeakSet()
_reserved = 0
_lock = threading.Lock()
_reclaimers: list[Callable[[int], None]] = []


def track(module) -> None:
    """Count a model against the budget for as long as it lives."""
    _held.add(module)


def held_bytes() -> int:
    """Bytes of parameters of every live tracked model (shared tensors counted once)."""
    seen, total = set(), 0
    for module in list(_held):
        for p in module.parameters():
            if p.is_meta:
                continue
            ptr = p.untyped_storage().data_ptr()
            if ptr not in seen:
                seen.add(ptr)
                total += p.numel() * p.element_size()
    return total


def on_pressure(reclaim: Callable[[int], None]) -> None:
    """Register a callback that frees memory (drops cached models) to make room for n bytes."""
    _reclaimers.append(reclaim)


def check_size(cfg: GPTConfig, what: str = "this model") -> int:
    """Refuse a single model over the per-model limit; returns its bytes."""
    check_structure(cfg)
    n = param_count(cfg)
    limit = max_params()
    if n > limit:
        raise BudgetError(f"{what} has {n / 1e6:,.0f}M parameters ({human_bytes(n * BYTES_PER_PARAM)} in fp32); "
                          f"this server's limit is {limit / 1e6:,.0f}M parameters "
                          f"({human_bytes(limit * BYTES_PER_PARAM)}). Choose a smaller model.")
    return n * BYTES_PER_PARAM


@contextmanager
def reserve(cfg: GPTConfig | None = None, what: str = "this model", nbytes: int | None = None,
            factor: float = 1.0):
    """Hold room for a model being built: refused unless it fits beside every model held.

    ``factor`` covers what training adds (gradients, optimizer state) on top of the weights.
    """
    global _reserved
    need = int((check_size(cfg, what) if cfg is not None else int(nbytes or 0)) * factor)
    limit = budget_bytes()
    with _lock:
        if held_bytes() + _reserved + need > limit:
            for reclaim in _reclaimers:
                reclaim(need + _reserved)
        held = held_bytes()
        if held + _reserved + need > limit:
            raise BudgetError(
                f"{what} needs {human_bytes(need)}; models in use on this server (yours and other "
                f"visitors') hold {human_bytes(held + _reserved)} of its {human_bytes(limit)} budget. "
                "Try a smaller model, or again in a minute.")
        _reserved += need
    try:
        yield need
    finally:
        with _lock:
            _reserved -= need
