"""The app shell: it starts on the default model and switches models safely."""
import pytest
from gradio_client.exceptions import AppError


def test_load_model_switches_and_reports(client):
    # gr.State is not part of the API: the endpoint takes the name, returns summary, name, picker.
    summary, changed, picker = client.predict("untrained:tiny", api_name="/load_model")
    assert changed == "untrained:tiny" and picker["value"] == "untrained:tiny"
    assert "untrained" in summary and "parameters" in summary


def test_load_model_offline_hub_keeps_current(client):
    client.predict("untrained:tiny", api_name="/load_model")
    summary, changed, picker = client.predict("gpt2-xl", api_name="/load_model")
    # A warning is shown; the session stays on the model it had.
    assert picker["value"] == "untrained:tiny"


def test_load_model_empty_name_is_an_error(client):
    with pytest.raises(AppError, match="Choose a model"):
        client.predict("  ", api_name="/load_model")
