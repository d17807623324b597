"""Stage 5 · the architecture view through its API (/architecture, /parameter_counts)."""
import numpy as np
import pytest
from gradio_client.exceptions import AppError

from tests.api.plots import plot_data, values

PROMPT = "Every effort moves you forward"


def run(client, prompt=PROMPT, top_k=3, layer=1, which="norm1", position=-1):
    return client.predict(prompt, top_k, layer, which, position, api_name="/architecture")


def test_architecture_reports_config_counts_and_the_traced_pass(client):
    (config, diagram, params, totals, residual, lens, lens_table, lens_note, ln_plot, ln_md,
     _layer) = run(client)
    assert "n_layers" in config and "emb_dim" in config
    assert "<svg" in diagram and "TransformerBlock" in diagram and "Masked multi-head attention" in diagram
    names = [r[0] for r in params["data"]]
    assert names[0] == "token embedding" and names[-1] == "output head"
    assert "without weight tying" in totals and "fp32" in totals and "bf16" in totals
    # The lens has one row per stage: the embeddings, then after each block.
    stages = [r[0] for r in lens_table["data"]]
    assert stages[0] == "embeddings" and stages[-1].startswith("after block")
    assert len(lens_table["headers"]) == 1 + 3
    heat = plot_data(lens)[0]
    z = np.array(values(heat["z"]))
    assert z.shape[0] == len(stages) and np.all((z >= 0) & (z <= 1))
    assert len(values(plot_data(residual)[-1]["y"])) == len(stages)
    assert "normalised" in ln_md and "variance" in ln_md


def test_layernorm_choices(client):
    *_, ln_md, _ = run(client, which="final", layer=999)   # the block number is ignored for the final norm
    assert "final LayerNorm" in ln_md
    *_, ln_md, _ = run(client, which="norm2", position=0)
    assert "LayerNorm 2, position 0" in ln_md


@pytest.mark.parametrize("kwargs,message", [
    ({"prompt": ""}, "empty"),
    ({"prompt": "x" * 6000}, "limit"),
    ({"top_k": 0}, "less than minimum"),
    ({"layer": 999}, "Block must be between"),
    ({"layer": 0}, "Block must be between"),
    ({"which": "norm9"}, "not in the list of choices"),
    ({"position": 10_000}, "Position must be between"),
])
def test_architecture_bad_input(client, kwargs, message):
    with pytest.raises(AppError, match=message):
        run(client, **kwargs)


def test_long_prompt_is_cut_with_a_notice(client):
    out = run(client, prompt="tokens " * 600)
    assert "so the first" in out[7]
    assert np.array(values(plot_data(out[5])[0]["z"])).shape[1] <= 128


def test_special_token_literal_and_odd_unicode(client):
    out = run(client, prompt="<|endoftext|> 東京 🍣 \u200b\u0301")
    assert out[6]["data"]


def test_preset_counts_match_the_book(client):
    table, totals, diagram = client.predict("gpt2-small", False, api_name="/parameter_counts")
    assert "163,009,536" in totals and "124,412,160" in totals and "621.83 MB" in totals
    assert "2,360,064" in diagram and "4,722,432" in diagram   # one block's attention and feed-forward
    _, totals, _ = client.predict("gpt2-xl", False, api_name="/parameter_counts")
    assert "1,637,792,000" in totals and "1,557,380,800" in totals and "6,247.68 MB" in totals
    with pytest.raises(AppError, match="not in the list of choices"):
        client.predict("gpt5", False, api_name="/parameter_counts")


def test_block_range_follows_the_active_model(client):
    from llm_core.registry import default_model_name

    try:
        client.predict("untrained:mini", api_name="/load_model")   # 4 blocks
        out = run(client, layer=4, which="norm2")
        assert "block 4, LayerNorm 2" in out[9] and "1 to 4" in out[10]["info"]
        assert [r[0] for r in out[6]["data"]][-1] == "after block 4"
        with pytest.raises(AppError, match="between 1 and 4"):
            run(client, layer=5)
    finally:
        client.predict(default_model_name(), api_name="/load_model")
