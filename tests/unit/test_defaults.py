"""Which model the app opens on, Chat's default, and where the app writes: GPT-2 small where the
local Hugging Face cache holds it (found with no network), the shipped models elsewhere."""
import os

import pytest
import torch

from llm_core import paths, registry
from llm_core.registry import (DEFAULT_BUILTIN, DEFAULT_INSTRUCT, GPT2_DEFAULT, INSTRUCT_GPT2,
                               default_chat_model, default_model_choice, load_model)
from tests.hf_cache import use_cache, write_tiny_gpt2

pytest.importorskip("transformers")


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    cache.mkdir()
    use_cache(monkeypatch, cache)
    yield cache
    for name in (GPT2_DEFAULT, INSTRUCT_GPT2):
        registry.forget(name)


def test_gpt2_small_is_the_default_when_the_cache_holds_it(hf_cache):
    hf = write_tiny_gpt2(hf_cache, "openai-community/gpt2")
    assert default_model_choice() == (GPT2_DEFAULT, "GPT-2 small, found in the local Hugging Face cache")
    bundle = load_model(None)                       # the default, loaded from the cache
    assert bundle.name == GPT2_DEFAULT and bundle.config.n_layers == 2
    ids = torch.tensor([bundle.tokenizer.encode("Every effort moves you")])
    with torch.no_grad():
        assert (bundle.model(ids) - hf(ids).logits).abs().max().item() <= 1e-4


def test_the_shipped_model_is_the_default_with_an_empty_cache(hf_cache):
    assert default_model_choice() == (DEFAULT_BUILTIN, f"the shipped {DEFAULT_BUILTIN}: GPT-2 is not in the local cache")
    assert default_chat_model() == DEFAULT_INSTRUCT


def test_a_half_downloaded_gpt2_is_not_the_default(hf_cache):
    write_tiny_gpt2(hf_cache, "openai-community/gpt2", with_weights=False)   # config.json only
    assert default_model_choice()[0] == DEFAULT_BUILTIN


def test_the_instruction_tuned_gpt2_is_chats_default_when_cached(hf_cache):
    write_tiny_gpt2(hf_cache, INSTRUCT_GPT2)
    assert default_chat_model() == INSTRUCT_GPT2
    assert default_model_choice()[0] == DEFAULT_BUILTIN   # the header's default is a separate question


def test_home_is_on_the_spaces_persistent_storage_when_it_is_writable(tmp_path, monkeypatch):
    monkeypatch.delenv("LLM_EXPLORER_HOME", raising=False)
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setattr(paths, "SPACE_DATA", data)
    assert paths.explorer_home() == data / "llm-explorer"
    monkeypatch.setattr(paths, "SPACE_DATA", tmp_path / "no-such-dir")
    assert paths.explorer_home() == paths.Path.home() / ".cache" / "llm-explorer"
    if os.geteuid() != 0:  # root may write anywhere
        data.chmod(0o555)
        monkeypatch.setattr(paths, "SPACE_DATA", data)
        assert paths.explorer_home() == paths.Path.home() / ".cache" / "llm-explorer"
        data.chmod(0o755)
    monkeypatch.setenv("LLM_EXPLORER_HOME", str(tmp_path / "mine"))
    monkeypatch.setattr(paths, "SPACE_DATA", data)
    assert paths.explorer_home() == tmp_path / "mine"   # the variable always wins


def test_model_flag_and_variable_win_and_say_so(monkeypatch):
    import app

    monkeypatch.delenv("LLM_EXPLORER_MODEL", raising=False)
    assert app.startup_model(app.parse_args([])) == (None, None)
    assert app.startup_model(app.parse_args(["--model", "untrained:tiny"])) == ("untrained:tiny", "chosen with --model")
    monkeypatch.setenv("LLM_EXPLORER_MODEL", "untrained:mini")
    assert app.startup_model(app.parse_args([])) == ("untrained:mini", "chosen with LLM_EXPLORER_MODEL")
    assert app.startup_model(app.parse_args(["--model", "gpt2"]))[1] == "chosen with --model"


def test_a_model_that_does_not_load_falls_back_to_the_shipped_one_and_says_why(monkeypatch, capsys):
    import app
    from llm_core.registry import ModelLoadError

    built, launched = [], []

    class Demo:
        def launch(self, **kw):
            launched.append(kw["server_port"])

    def build_demo(model=None, reason=None):
        built.append((model, reason))
        if model != DEFAULT_BUILTIN:
            raise ModelLoadError("no such model")
        return Demo()

    monkeypatch.setattr(app, "build_demo", build_demo)
    monkeypatch.delenv("LLM_EXPLORER_MODEL", raising=False)
    app.main(["--model", "nowhere/at-all", "--port", "7999"])
    assert built == [("nowhere/at-all", "chosen with --model"),
                     (DEFAULT_BUILTIN, f"the shipped {DEFAULT_BUILTIN}: nowhere/at-all did not load")]
    assert launched == [7999]
    assert "Could not load nowhere/at-all: no such model" in capsys.readouterr().out
