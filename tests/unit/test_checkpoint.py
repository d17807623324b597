"""Checkpoints: our format round-trips atomically; GPT-2 weights match transformers."""
import json

import pytest
import torch

from llm_core import GPTConfig, build_untrained, load_model
from llm_core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from llm_core.registry import ModelLoadError


def _greedy(fn, ids, n):
    for _ in range(n):
        ids = torch.cat([ids, fn(ids)[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids


@pytest.mark.parametrize("sizes", [dict(n_layer=2, n_head=4, n_embd=64, n_positions=64),
                                   dict(n_layer=3, n_head=6, n_embd=96, n_positions=77)])
def test_parity_with_transformers_gpt2(tmp_path, sizes):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    hf_cfg = transformers.GPT2Config(vocab_size=50257, **sizes)
    hf = transformers.GPT2LMHeadModel(hf_cfg).eval()
    hf.save_pretrained(tmp_path, safe_serialization=True)
    bundle = load_model(str(tmp_path))
    assert bundle.source == "local" and bundle.config.n_layers == sizes["n_layer"]
    ids = torch.tensor([bundle.tokenizer.encode("Every effort moves you toward the sunlit terraces")])
    with torch.no_grad():
        ours = bundle.model(ids)
        theirs = hf(ids).logits
        assert (ours - theirs).abs().max().item() <= 1e-4
        a = _greedy(bundle.model, ids, 12)
        b = _greedy(lambda x: hf(x).logits, ids, 12)
    assert torch.equal(a, b)


def test_own_format_roundtrip_and_atomic_overwrite(tmp_path):
    cfg = GPTConfig(vocab_size=50257, context_length=16, emb_dim=16, n_heads=2, n_layers=1, tie_weights=True)
    m = build_untrained(cfg, seed=5)
    path = save_checkpoint(tmp_path / "ck", m, meta={"note": "first"})
    m2, tok, meta = load_checkpoint(path)
    assert meta["note"] == "first" and tok.name == "gpt2"
    assert m2.out_head.weight.data_ptr() == m2.tok_emb.weight.data_ptr()  # still tied
    for (k, v), (k2, v2) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)

    class Boom:  # a save that fails half-way must leave the old checkpoint intact
        name = "broken"
        encoding = None

    with pytest.raises(Exception):
        save_checkpoint(path, m, tokenizer=Boom(), meta={"note": "second"})
    assert load_checkpoint(path)[2]["note"] == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["ck"]  # no temp dirs left behind


def test_pickled_or_missing_weights_are_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 8, "n_head": 2,
                                                      "n_layer": 1, "n_positions": 8, "vocab_size": 10}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"not really a pickle")
    with pytest.raises(CheckpointError, match="safetensors"):
        load_checkpoint(tmp_path)
    with pytest.raises(ModelLoadError, match="safetensors"):
        load_model(str(tmp_path))


def test_offline_hub_and_nonsense_names_give_clear_errors(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError):
        load_model("openai-community/gpt2-this-does-not-exist")
    with pytest.raises(ModelLoadError, match="not a built-in"):
        load_model("no such model at all")
    with pytest.raises(ModelLoadError, match="preset"):
        load_model("untrained:huge")


def test_model_cache_keeps_to_its_byte_budget(monkeypatch):
    from llm_core import registry

    tiny = load_model("untrained:tiny")
    tiny_bytes = registry._weight_bytes(tiny)
    monkeypatch.setattr(registry, "MAX_CACHED_BYTES", int(tiny_bytes * 1.5))
    load_model("untrained:mini")          # larger than the whole budget on its own
    held = registry.cached_models()
    assert held == ["untrained:mini"]     # the older models went; the newest always stays
    assert load_model("untrained:tiny") is not tiny   # evicted, so loaded afresh
    assert registry.cached_models() == ["untrained:tiny"]


def test_hub_name_loads_from_the_hugging_face_cache_without_network(tmp_path, monkeypatch):
    """A GPT-2 downloaded before (here: a tiny one written into the Hub cache's layout) loads by
    its repo id with no network; the loader never asks the Hub."""
    transformers = pytest.importorskip("transformers")
    import huggingface_hub.constants as hub_constants

    from llm_core import registry

    repo = "openai-community/gpt2-large"
    model_dir = tmp_path / ("models--" + repo.replace("/", "--"))
    snapshot = model_dir / "snapshots" / ("0" * 40)
    torch.manual_seed(1)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=50257, n_layer=2, n_head=2, n_embd=32, n_positions=40)).eval()
    hf.save_pretrained(snapshot, safe_serialization=True)
    (model_dir / "refs").mkdir()
    (model_dir / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("llm_core.checkpoint.hub_reachable", lambda *a, **k: pytest.fail("asked the network"))
    registry.forget("gpt2-large")
    try:
        bundle = load_model("gpt2-large")   # the short name maps to the repo id
        assert bundle.config.n_layers == 2 and bundle.config.context_length == 40
        ids = torch.tensor([bundle.tokenizer.encode("Every effort moves you")])
        with torch.no_grad():
            assert (bundle.model(ids) - hf(ids).logits).abs().max().item() <= 1e-4
    finally:
        registry.forget("gpt2-large")
