"""What the benchmarks share: transformers' GPT-2 holding the same weights as ours, and a timer.

Imported by the ``bench_*.py`` scripts (their folder is on ``sys.path`` when they run as
``.venv/bin/python benchmarks/bench_x.py``); not a benchmark itself.
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from llm_core import GPT_CONFIG_124M, load_model  # noqa: E402
from llm_core.hf_format import hf_state_dict  # noqa: E402


def gpt2_config(cfg, drop_rate: float = 0.0, **extra):
    """A transformers ``GPT2Config`` of ``cfg``'s shape (``extra``: more GPT2Config fields)."""
    from transformers import GPT2Config

    return GPT2Config(vocab_size=cfg.vocab_size, n_positions=cfg.context_length, n_embd=cfg.emb_dim,
                      n_layer=cfg.n_layers, n_head=cfg.n_heads, resid_pdrop=drop_rate, embd_pdrop=drop_rate,
                      attn_pdrop=drop_rate, tie_word_embeddings=cfg.tie_weights, **extra)


def transformers_twin(ours, drop_rate: float = 0.0):
    """A ``GPT2LMHeadModel`` holding our model's weights (the export's mapping, ``hf_state_dict``)."""
    from transformers import GPT2LMHeadModel

    theirs = GPT2LMHeadModel(gpt2_config(ours.cfg, drop_rate))
    theirs.load_state_dict(hf_state_dict(ours), strict=not ours.cfg.tie_weights)  # tied: no lm_head.weight
    return theirs


def random_gpt2_pair(seed: int, model_dir: str | None = None, device=None, **extra):
    """(transformers model, our model) with the same random GPT-2-small weights: theirs is saved with
    ``save_pretrained`` (into ``model_dir``, else a temporary folder) and ours loaded from it."""
    from transformers import GPT2LMHeadModel

    torch.manual_seed(seed)
    theirs = GPT2LMHeadModel(gpt2_config(GPT_CONFIG_124M.with_(tie_weights=True), **extra))  # as GPT-2

    def saved_and_loaded(folder):
        theirs.save_pretrained(folder, safe_serialization=True)
        return load_model(folder, device=device).model

    if model_dir:
        return theirs, saved_and_loaded(model_dir)
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        return theirs, saved_and_loaded(tmp)


def median_seconds(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls, after one untimed warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)
