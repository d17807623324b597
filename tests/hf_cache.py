"""A Hugging Face cache laid out as the Hub lays it out, holding tiny random GPT-2s that
``transformers`` writes, so Hub-id code paths run with no network."""
from __future__ import annotations

from pathlib import Path

import torch

REVISION = "0" * 40


def write_tiny_gpt2(cache_dir: Path, repo_id: str, seed: int = 1, with_weights: bool = True,
                    n_positions: int = 40):
    """``models--ORG--NAME/snapshots/<rev>/{config.json, model.safetensors}`` + ``refs/main``."""
    import transformers

    repo_dir = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / REVISION
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
            vocab_size=50257, n_layer=2, n_head=2, n_embd=32, n_positions=n_positions)).eval()
    model.save_pretrained(snapshot, safe_serialization=True)
    if not with_weights:
        (snapshot / "model.safetensors").unlink()
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(REVISION)
    return model


def use_cache(monkeypatch, cache_dir: Path) -> None:
    """Point huggingface_hub at ``cache_dir``, offline, and fail the test on any network check."""
    import huggingface_hub.constants as hub_constants
    import pytest

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache_dir))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("llm_core.checkpoint.hub_reachable", lambda *a, **k: pytest.fail("asked the network"))
