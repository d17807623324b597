"""The app shell: it starts on the default model and switches models safely."""
import pytest
from gradio_client.exceptions import AppError


def test_load_model_switches_and_reports(client):
    # gr.State is not part of the API: the endpoint takes the name, returns summary, name, picker.
    summary, changed, picker = client.predict("untrained:tiny", api_name="/load_model")
    assert changed == "untrained:tiny" and picker["value"] == "untrained:tiny"
    assert "untrained" in summary and "parameters" in summary and "chosen in the list" in summary


def test_load_model_offline_hub_keeps_current(client):
    client.predict("untrained:tiny", api_name="/load_model")
    summary, changed, picker = client.predict("gpt2-xl", api_name="/load_model")
    # A warning is shown; the session stays on the model it had.
    assert picker["value"] == "untrained:tiny"


def test_load_model_empty_name_is_an_error(client):
    with pytest.raises(AppError, match="Choose a model"):
        client.predict("  ", api_name="/load_model")


@pytest.mark.slow
def test_header_says_gpt2_is_active_because_the_cache_holds_it(tmp_path, monkeypatch):
    import app
    from llm_core import registry
    from tests.hf_cache import use_cache, write_tiny_gpt2

    pytest.importorskip("transformers")
    use_cache(monkeypatch, tmp_path)
    write_tiny_gpt2(tmp_path, "openai-community/gpt2")
    try:
        demo = app.build_demo()
        summary = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "model-summary")
        assert summary.value.startswith("**Active:** gpt2 · hub")
        assert summary.value.endswith("*GPT-2 small, found in the local Hugging Face cache*")
        demo = app.build_demo("untrained:tiny", "chosen with --model")
        summary = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "model-summary")
        assert summary.value.endswith("*chosen with --model*")
    finally:
        registry.forget("gpt2")
