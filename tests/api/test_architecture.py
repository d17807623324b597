"""Stage 5 · the architecture view through its API (/architecture, /parameter_counts)."""
import json

import numpy as np
import pytest
from gradio_client.exceptions import AppError

from tests.api.plots import plot_data, values

PROMPT = "Every effort moves you forward"


def run(client, prompt=PROMPT, top_k=3, layer=0, which="norm1", position=-1):
    return client.predict(prompt, top_k, layer, which, position, api_name="/architecture")


def test_architecture_reports_config_counts_and_the_traced_pass(client):
    (config, diagram, params, totals, residual, lens, lens_table, lens_note, ln_plot, ln_md,
     _layer, dla) = run(client)
    assert "n_layers" in config and "emb_dim" in config
    assert "<svg" in diagram and "TransformerBlock" in diagram and "Masked multi-head attention" in diagram
    names = [r[0] for r in params["data"]]
    assert names[0] == "token embedding" and names[-1] == "output head"
    assert "without weight tying" in totals and "fp32" in totals and "bf16" in totals
    # The lens has one row per stage: the embeddings, then after each layer (counted from 0).
    stages = [r[0] for r in lens_table["data"]]
    assert stages[0] == "embeddings" and stages[1] == "after layer 0" and stages[-1].startswith("after layer")
    assert len(lens_table["headers"]) == 1 + 3
    heat = plot_data(lens)[0]
    z = np.array(values(heat["z"]))
    assert z.shape[0] == len(stages) and np.all((z >= 0) & (z <= 1))
    assert len(values(plot_data(residual)[-1]["y"])) == len(stages)
    assert "normalised" in ln_md and "variance" in ln_md
    # direct logit attribution: embeddings + attention and MLP per layer, which add up to the logit
    bars = plot_data(dla)
    assert [b["name"] for b in bars] == ["embeddings", "attention", "MLP"]
    assert len(values(bars[1]["x"])) == len(stages)


def test_layernorm_choices(client):
    *_, ln_md, _, _ = run(client, which="final", layer=999)   # the layer number is ignored for the final norm
    assert "final LayerNorm" in ln_md
    *_, ln_md, _, _ = run(client, which="norm2", position=0)
    assert "layer 0, LayerNorm 2, position 0" in ln_md


@pytest.mark.parametrize("kwargs,message", [
    ({"prompt": ""}, "empty"),
    ({"prompt": "x" * 6000}, "limit"),
    ({"top_k": 0}, "less than minimum"),
    ({"layer": 999}, "Layer must be between"),
    ({"layer": -1}, "Layer must be between"),
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


def test_layer_range_follows_the_active_model(client):
    from llm_core.registry import default_model_name

    try:
        client.predict("untrained:mini", api_name="/load_model")   # 4 layers
        out = run(client, layer=3, which="norm2")
        assert "layer 3, LayerNorm 2" in out[9] and "0 to 3" in out[10]["info"]
        assert [r[0] for r in out[6]["data"]][-1] == "after layer 3"
        with pytest.raises(AppError, match="between 0 and 3"):
            run(client, layer=4)
    finally:
        client.predict(default_model_name(), api_name="/load_model")


def test_logit_lens_keeps_repeated_tokens_and_shows_quotes(client):
    """Positions on the axes (a categorical axis would merge the two 'the'), quotes shown as typed."""
    prompt = 'the "list" and the list'
    out = run(client, prompt=prompt)
    heat = plot_data(out[5])[0]
    from llm_core import default_model_name, load_model
    n = len(load_model(default_model_name()).tokenizer.encode(prompt))
    assert np.array(values(heat["z"])).shape[1] == n
    assert values(heat["x"]) == list(range(n))
    fig = out[5]["plot"]
    assert "&quot;" not in fig
    assert any('"' in t for t in json.loads(fig)["layout"]["xaxis"]["ticktext"])


def test_activation_patching_restores_the_clean_answer(client):
    clean, corrupt = "Open the file and read the", "Open the list and sort the"  # ␣file vs ␣list
    fig, md = client.predict(clean, corrupt, "resid_pre", "", "", api_name="/activation_patching")
    heat = plot_data(fig)[0]
    z = np.array(values(heat["z"]), dtype=float)
    from llm_core import default_model_name, load_model
    bundle = load_model(default_model_name())
    t = len(bundle.tokenizer.encode(clean))
    assert z.shape == (bundle.config.n_layers, t)
    clean_ids, corrupt_ids = bundle.tokenizer.encode(clean), bundle.tokenizer.encode(corrupt)
    same = [i for i, (a, b) in enumerate(zip(clean_ids, corrupt_ids)) if a == b]
    # entering layer 0 the stream is token + position embedding: where the tokens agree, nothing to restore
    assert same and np.allclose(z[0, same], 0.0)
    assert np.abs(z[0, [i for i in range(t) if i not in same]]).max() > 0.01
    assert "Clean answer" in md and "strongest patch" in md


@pytest.mark.parametrize("args,message", [
    (("The list", "The list is a", "resid_pre", "", ""), "same number of tokens"),
    (("If the list is a list, the list", "If the file is a file, the file", "resid_pre", " of", " of"),
     "same token"),
    (("If the list is a list, the list", "If the file is a file, the file", "resid_pre", " catalogue", ""),
     "not one"),
    (("", "x", "resid_pre", "", ""), "empty"),
    (("a", "b", "ln9", "", ""), "not in the list of choices"),
])
def test_activation_patching_bad_input(client, args, message):
    with pytest.raises(AppError, match=message):
        client.predict(*args, api_name="/activation_patching")
