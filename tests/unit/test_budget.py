"""The memory budget, config validation, typed-name policy and private saved runs (issue 12)."""
import copy
import json

import pytest
import torch
from safetensors.torch import save_file

from llm_core import GPTConfig, budget, build_untrained, hosting, load_model, registry, runs
from llm_core.registry import ModelLoadError

TINY = {"vocab_size": 16, "context_length": 4, "emb_dim": 8, "n_heads": 1, "n_layers": 1}


def _our_checkpoint(folder, model_cfg, weights_cfg=None):
    """A folder in our format whose config says ``model_cfg``; weights from ``weights_cfg``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"format": "llm-explorer", "model": model_cfg,
                                                    "tokenizer": {"kind": "gpt2"}}))
    m = build_untrained(GPTConfig(**(weights_cfg or TINY)))
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(folder / "model.safetensors"))
    return folder


def test_a_million_layers_is_refused_at_once_before_any_tensor(tmp_path):
    folder = _our_checkpoint(tmp_path / "huge", dict(TINY, n_layers=1_000_000))
    held = budget.held_bytes()
    with pytest.raises(ModelLoadError, match=r"n_layers is 1,000,000; this app handles at most 128"):
        load_model(str(folder))
    assert budget.held_bytes() <= held


@pytest.mark.parametrize("change, message", [
    (dict(emb_dim=1e9), "emb_dim is 1,000,000,000"),
    (dict(emb_dim=2**14, vocab_size=500_000), r"parameters .* this server's limit is"),
    (dict(n_layers=-1), "n_layers must be at least 1"),
    (dict(emb_dim=16.5), "emb_dim must be a whole number"),
    (dict(n_layers="4"), "n_layers must be a whole number"),
    (dict(n_layers=True), "n_layers must be a whole number"),
    (dict(n_heads=3), "divisible"),
    (dict(drop_rate=float("nan")), "drop_rate"),
])
def test_bad_configs_are_load_errors_with_a_reason(tmp_path, change, message):
    folder = _our_checkpoint(tmp_path / "bad", dict(TINY, **change))
    with pytest.raises(ModelLoadError, match=message):
        load_model(str(folder))


def test_size_and_limit_are_in_the_message(monkeypatch):
    monkeypatch.setenv("LLM_EXPLORER_MAX_PARAMS", "200000000")
    registry.forget("untrained:gpt2-xl")
    with pytest.raises(ModelLoadError, match=r"has 1,638M parameters .*limit is 200M parameters"):
        load_model("untrained:gpt2-xl")
    labels = dict((v, k) for k, v in registry.model_choices())
    assert "too large for this server" in labels["untrained:gpt2-xl"]
    assert "too large" not in labels["untrained:gpt2-small"]


def test_every_held_model_counts_and_the_cache_makes_room(monkeypatch):
    tiny = load_model("untrained:tiny")
    base = budget.held_bytes()
    twin = copy.deepcopy(tiny.model)          # a fine-tune copy, an untrained twin...
    assert budget.held_bytes() - base == sum(p.numel() * 4 for p in twin.parameters())
    del tiny
    # a budget with room for what is held outside the cache and 90 % of GPT "mini": the cache must
    # give way, and mini is refused all the same
    mini_bytes = budget.param_count(registry.PRESETS["mini"]) * 4
    outside_cache = budget.held_bytes() - sum(registry._weight_bytes(b) for b in registry._cache.values())
    monkeypatch.setenv("LLM_EXPLORER_CACHE_GB", str((outside_cache + 0.9 * mini_bytes) / budget.GB))
    registry.forget("untrained:mini")
    with pytest.raises(ModelLoadError, match=r"needs .* hold .* budget"):
        load_model("untrained:mini")
    assert registry.cached_models() == []  # every cached model was dropped to make room
    del twin
    assert load_model("untrained:mini").config.emb_dim == 256  # the twin's bytes were what was missing


def test_hf_config_without_n_embd_and_mismatched_weights(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_head": 2, "n_layer": 1,
                                                      "n_positions": 8, "vocab_size": 10}))
    with pytest.raises(ModelLoadError, match="no n_embd"):
        load_model(str(tmp_path))
    other = _our_checkpoint(tmp_path / "mismatch", dict(TINY, emb_dim=16, n_heads=2))
    with pytest.raises(ModelLoadError, match=r"tok_emb.weight is \[16, 8\] in the weights but \[16, 16\]"):
        load_model(str(other))
    broken = _our_checkpoint(tmp_path / "broken", TINY)
    (broken / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ModelLoadError, match="not a readable safetensors file"):
        load_model(str(broken))


def test_deeply_nested_config_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ModelLoadError, match="nested too deeply"):
        load_model(str(tmp_path))


@pytest.mark.parametrize("name, message", [
    ("x" * 1_000_000, "at most 300"),
    (123, "must be text"),
    (["x"], "must be text"),
    ("a b/c d", "not a folder holding a model"),
    ("bad\x00name", "control"),
    ("\ud800", "control or invalid"),
])
def test_bad_names_are_clear(name, message):
    with pytest.raises(ModelLoadError, match=message):
        load_model(name)


def test_public_server_refuses_every_typed_folder_alike(tmp_path, monkeypatch):
    folder = _our_checkpoint(tmp_path / "real", TINY)
    monkeypatch.setenv("LLM_EXPLORER_PUBLIC", "1")
    answers = set()
    for name in (str(folder), "/root", "/etc", "~", "/no/such/folder", "./x", "..\\x", str(tmp_path)):
        with pytest.raises(ModelLoadError) as info:
            load_model(name)
        answers.add(str(info.value))
    assert answers == {hosting.LOCAL_REFUSED}
    monkeypatch.setenv("LLM_EXPLORER_MODEL_DIRS", str(tmp_path))   # the operator opts one folder in
    assert load_model(str(folder)).config.emb_dim == 8
    with pytest.raises(ModelLoadError) as info:
        load_model("/etc")
    assert str(info.value) == hosting.LOCAL_REFUSED
    monkeypatch.delenv("LLM_EXPLORER_MODEL_DIRS")
    hosting.configure("0.0.0.0", allow_local_models=True)
    try:
        assert hosting.is_public() and hosting.local_models_allowed()
    finally:
        hosting.configure(None)
    monkeypatch.delenv("LLM_EXPLORER_PUBLIC")
    hosting.configure("0.0.0.0")
    try:
        assert hosting.is_public() and not hosting.local_models_allowed()
    finally:
        hosting.configure(None)


def test_saved_runs_are_private_and_within_a_quota(tmp_path, monkeypatch):
    model = build_untrained(GPTConfig(**dict(TINY, vocab_size=50257)))
    alice, bob = runs.owner_id("session-a"), runs.owner_id("session-b")
    name = runs.save_run(alice, "runA", model, None, {"steps": 272}, overwrite=False)
    assert name == runs.saved_name(alice, "runA") and runs.saved_names(alice) == [name]
    assert runs.saved_names(bob) == []
    bobs = runs.save_run(bob, "runA", model, None, {"steps": 1}, overwrite=True)  # his own namespace
    assert bobs != name and load_model(name).meta["steps"] == 272
    with pytest.raises(ModelLoadError, match="not one of your saved runs"):
        registry.check_typed_name(name, bob)
    with pytest.raises(ModelLoadError, match="not one of your saved runs"):   # existing or not: one answer
        registry.check_typed_name(runs.saved_name(alice, "nothing"), bob)
    assert registry.check_typed_name(name, alice) == name
    with pytest.raises(runs.RunError, match="already have a run"):
        runs.save_run(alice, "runA", model, None, {}, overwrite=False)
    monkeypatch.setenv("LLM_EXPLORER_RUNS_PER_SESSION", "2")
    runs.save_run(alice, "runB", model, None, {}, overwrite=False)
    with pytest.raises(runs.RunError, match="2 saved runs"):
        runs.save_run(alice, "runC", model, None, {}, overwrite=False)
    runs.save_run(alice, "runB", model, None, {}, overwrite=True)     # replacing one stays within the count
    monkeypatch.setenv("LLM_EXPLORER_RUNS_MB_PER_SESSION", "0.001")
    with pytest.raises(runs.RunError, match="MB of the"):
        runs.save_run(alice, "runB", model, None, {}, overwrite=True)


def test_stale_save_folders_are_removed(tmp_path):
    owner = runs.owner_id("stale")
    folder = runs.runs_dir() / owner
    (folder / ".x.tmp-abc").mkdir(parents=True)
    (folder / ".x.old-123").mkdir()
    (folder / ".x.old-123" / "model.safetensors").write_bytes(b"0" * 10)
    removed = runs.remove_stale()
    assert {p.name for p in removed} >= {".x.tmp-abc", ".x.old-123"}
    assert not any(p.name.startswith(".") for p in folder.iterdir())


def test_published_runs_come_only_from_the_cli(tmp_path, capsys):
    model = build_untrained(GPTConfig(**dict(TINY, vocab_size=50257)))
    src = runs.save_run(runs.owner_id("publisher"), "demo", model, None, {"steps": 3}, overwrite=True)
    runs._main(["publish", src, "shared-demo"])
    assert "published:shared-demo" in runs.published_names()
    assert ("shared-demo (published)", "published:shared-demo") in registry.model_choices(None)
    assert registry.check_typed_name("published:shared-demo", runs.owner_id("anyone"))
    assert torch.equal(load_model("published:shared-demo").model.tok_emb.weight, model.tok_emb.weight)
    runs._main(["unpublish", "shared-demo"])
    registry.forget("published:shared-demo")
    assert "published:shared-demo" not in runs.published_names()


def test_a_save_killed_between_its_renames_gets_its_old_checkpoint_back():
    model = build_untrained(GPTConfig(**dict(TINY, vocab_size=50257)))
    owner = runs.owner_id("renames")
    name = runs.save_run(owner, "keep", model, None, {"steps": 7}, overwrite=True)
    folder = runs.resolve(name)
    folder.rename(folder.parent / ".keep.old-999")      # the first rename happened, the second did not
    runs.remove_stale()
    assert load_model(name).meta["steps"] == 7


def test_public_server_downloads_only_listed_hub_repos(monkeypatch):
    from llm_core import checkpoint

    asked = []
    monkeypatch.setattr(checkpoint, "hub_reachable", lambda *a, **k: asked.append(1) or False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("LLM_EXPLORER_PUBLIC", "1")
    with pytest.raises(ModelLoadError) as info:
        load_model("someone/huge-model")
    assert "does not download someone/huge-model" in str(info.value) and not asked
    with pytest.raises(ModelLoadError) as info:   # a listed repo gets as far as the network
        load_model("openai-community/gpt2-medium")
    assert "cannot be reached" in str(info.value) and asked
    monkeypatch.setenv("LLM_EXPLORER_HUB_MODELS", "someone/huge-model")
    with pytest.raises(ModelLoadError) as info:
        load_model("someone/huge-model")
    assert "cannot be reached" in str(info.value)
    monkeypatch.delenv("LLM_EXPLORER_PUBLIC")
    monkeypatch.delenv("LLM_EXPLORER_HUB_MODELS")
    with pytest.raises(ModelLoadError) as info:   # a private server tries any repo
        load_model("someone/other-model")
    assert "cannot be reached" in str(info.value)
