"""The Attention tab through its API: /attention and /attention_toy."""
import json

import numpy as np
import pytest
import torch
from gradio_client.exceptions import AppError

from llm_core import default_model_name, load_model
from tests.api.plots import values

PROMPT = "The cat sat on the mat because it was tired."


def _figure(out) -> dict:
    """gradio_client gives a Plot as {'type': 'plotly', 'plot': '<figure json>'}."""
    assert isinstance(out, dict) and out.get("type") == "plotly", out
    return json.loads(out["plot"])


def _predict(client, prompt=PROMPT, layer=0, head=0, focus=-1, statistic="entropy", math_tokens=6, seed=123):
    return client.predict(prompt, layer, head, focus, statistic, math_tokens, seed, api_name="/attention")


@pytest.fixture(scope="module")
def cfg(client):
    # The app fixture starts on the default model, and each client session starts there too.
    return load_model(default_model_name()).config


def test_attention_returns_every_view(client, cfg):
    out = _predict(client)
    notice, head_map, grid, mean_map, head_view, summary, summary_text, math_md, qkv, scores = out
    n_tokens = len(load_model(default_model_name()).tokenizer.encode(PROMPT))
    assert f"{n_tokens} tokens" in notice
    heat = _figure(head_map)["data"][0]
    assert heat["type"] == "heatmap"
    assert len(_figure(grid)["data"]) == cfg.n_heads               # one map per head
    assert _figure(mean_map)["data"][0]["type"] == "heatmap"
    assert any(tr.get("mode") == "lines" for tr in _figure(head_view)["data"])
    assert _figure(summary)["data"][0]["type"] == "heatmap"
    assert "entropy" in summary_text
    assert "Layer 0, head 0" in math_md and "softmax" in math_md
    assert len(_figure(qkv)["data"]) == 3 and len(_figure(scores)["data"]) == 6


def _model_weights(prompt: str, layer: int, head: int) -> np.ndarray:
    """The attention weights of one head, straight from the model (no tab code involved)."""
    bundle = load_model(default_model_name())
    ids = torch.tensor([bundle.tokenizer.encode(prompt)])
    return bundle.model.run_with_trace(ids)[f"blocks.{layer}.attn.weights"][0, head].numpy()


def test_drawn_weights_are_the_models(client, cfg):
    layer, head = cfg.n_layers - 1, cfg.n_heads - 1
    out = _predict(client, layer=layer, head=head)
    drawn = np.array(values(_figure(out[1])["data"][0]["z"]), dtype=np.float64)
    expected = _model_weights(PROMPT, layer, head)
    t = expected.shape[0]
    assert drawn.shape == (t, t)
    lower = np.tril_indices(t)
    np.testing.assert_allclose(drawn[lower], expected[lower], atol=1e-5)   # what the head computed...
    assert np.isnan(drawn[np.triu_indices(t, 1)]).all()                   # ...and the causal mask blank
    np.testing.assert_allclose(np.nansum(drawn, axis=1), 1.0, atol=1e-4)   # each query's weights sum to 1
    mean = np.array(values(_figure(out[3])["data"][0]["z"]), dtype=np.float64)
    every_head = np.stack([_model_weights(PROMPT, layer, h) for h in range(cfg.n_heads)])
    np.testing.assert_allclose(mean[lower], every_head.mean(0)[lower], atol=1e-5)


def test_long_prompt_is_cut_with_a_notice(client, cfg):
    limit = min(256, cfg.context_length)
    notice = _predict(client, prompt=" word" * (limit + 20))[0]
    assert f"first {limit}" in notice and "only" in notice


def test_special_token_and_odd_unicode_are_fine(client):
    prompt = "a<|endoftext|>b 🤖 naïve 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 \u200b漢字"
    out = _predict(client, prompt=prompt)
    tok = load_model(default_model_name()).tokenizer
    ids = tok.encode(prompt)
    assert tok.eot_id in ids                                   # the literal is the special token
    assert out[0].startswith(f"**{len(ids)} tokens** through")
    drawn = np.array(values(_figure(out[1])["data"][0]["z"]), dtype=np.float64)
    lower = np.tril_indices(len(ids))
    np.testing.assert_allclose(drawn[lower], _model_weights(prompt, 0, 0)[lower], atol=1e-5)


@pytest.mark.parametrize("prompt", ["", "   \n  "])
def test_empty_prompt_is_refused(client, prompt):
    with pytest.raises(AppError, match="empty"):
        _predict(client, prompt=prompt)


def test_huge_prompt_is_refused(client):
    with pytest.raises(AppError, match="limit"):
        _predict(client, prompt="x" * 50_000)


def test_layer_and_head_out_of_range(client, cfg):
    with pytest.raises(AppError, match=f"Layer must be between 0 and {cfg.n_layers - 1}"):
        _predict(client, layer=cfg.n_layers)
    with pytest.raises(AppError, match="Layer must be between"):
        _predict(client, layer=-1)
    with pytest.raises(AppError, match=f"Head must be between 0 and {cfg.n_heads - 1}"):
        _predict(client, head=cfg.n_heads + 3)


def test_focus_token_out_of_range(client):
    with pytest.raises(AppError, match="Token for the head view"):
        _predict(client, prompt="one two", focus=5)


def test_unknown_statistic_is_refused(client):
    import gradio as gr

    from tabs.attention import attention

    # the dropdown refuses it before the handler runs...
    with pytest.raises(AppError, match="charisma is not in the list of choices"):
        _predict(client, statistic="charisma")
    # ...and the handler refuses it for callers that skip the component
    with pytest.raises(gr.Error, match="Unknown statistic 'charisma': choose one of entropy, previous token"):
        attention(PROMPT, 0, 0, -1, "charisma", 6, 123, default_model_name())


def test_toy_example_shows_the_books_numbers(client):
    md, fig = client.predict("journey", api_name="/attention_toy")
    for number in ("0.9544", "1.4950", "0.2379", "0.1581", "0.4419", "0.6515", "0.5683"):
        assert number in md
    assert _figure(fig)["data"][0]["type"] == "heatmap"


# Handlers called directly (no browser, no client): the edges a person rarely reaches.

def test_one_token_prompt_draws_everything():
    from tabs.attention import attention

    out = attention("a", 0, 0, -1, "entropy", 12, 0, "untrained:tiny")
    assert out[0].startswith("**1 token**")
    assert all(fig is not None for fig in out[1:6]) and "Token 0" in out[7]


def test_switching_models_keeps_the_pickers_in_range():
    from tabs.attention import _on_model_change

    from tabs.attention import DEFAULT_PROMPTS

    layer, head, prompt, ko_heads, grid, *_ = _on_model_change("untrained:tiny", 99, -4, DEFAULT_PROMPTS[1])
    tiny = load_model("untrained:tiny").config
    assert layer["value"] == tiny.n_layers - 1 and head["value"] == 0
    assert f"0 to {tiny.n_layers - 1}" in layer["info"]
    assert prompt == DEFAULT_PROMPTS[0]        # GPT-2's tokenizer keeps "cat" whole: its default prompt
    assert ko_heads == "" and grid.count("data-layer=") == tiny.n_layers * tiny.n_heads
    layer, head, prompt, *_ = _on_model_change("no-such-model-anywhere", 3, 3, "my own text")
    assert layer["value"] == 0 and head["value"] == 0
    assert prompt == {"__type__": "update"}     # a prompt the user typed stays


# ---------------------------------------------------------------- repeated tokens, knock-out, attribution

REPEAT = "The list is a list of values. The list is a list of"


def test_math_heatmaps_keep_repeated_tokens(client):
    """' list' appears twice in the first six tokens: every panel still has six rows, one per position."""
    tok = load_model(default_model_name()).tokenizer
    ids = tok.encode(REPEAT)[:6]
    assert len(set(ids)) < len(ids)
    out = _predict(client, prompt=REPEAT, math_tokens=6)
    scores, qkv = _figure(out[9]), _figure(out[8])
    for trace in scores["data"] + qkv["data"]:
        assert len(values(trace["z"])) == 6
        assert values(trace["y"]) == list(range(6))


def _ko(client, heads, which="these", mode="zero", prompt=REPEAT):
    return client.predict(prompt, heads, which, mode, api_name="/knock_out_heads")


def _bars(fig):
    data = _figure(fig)["data"]
    return [np.array(values(d["x"]), dtype=float) for d in data]


def test_knocking_out_a_head_changes_the_next_token_distribution(client, cfg):
    fig, md = _ko(client, "0.0")
    before, after = _bars(fig)
    assert not np.allclose(before, after, atol=1e-4)
    assert "1 of" in md and "heads knocked out" in md and "Total variation" in md
    # the same heads through the core function: the same probabilities
    bundle = load_model(default_model_name())
    from llm_core import interventions as iv
    ids = bundle.tokenizer.encode(REPEAT)
    with torch.inference_mode():
        p = torch.softmax(iv.ablate_heads(bundle, ids, [(0, 0)])[0, -1], -1)
    assert after.max() == pytest.approx(float(p.max()), abs=1e-5)


def test_knock_out_all_but_and_mean_mode(client, cfg):
    fig, md = _ko(client, "0.0, 1.1", which="all but", mode="mean")
    assert f"only 2 of {cfg.n_layers * cfg.n_heads} heads kept" in md and "mean" in md
    before, after = _bars(fig)
    assert not np.allclose(before, after, atol=1e-4)


@pytest.mark.parametrize("heads,which,message", [
    ("", "these", "No head is knocked out"),
    ("99.0", "these", "does not exist"),
    ("zero", "these", "not a head"),
    ("0.0", "everything", "not in the list of choices"),
])
def test_knock_out_bad_input(client, heads, which, message):
    with pytest.raises(AppError, match=message):
        _ko(client, heads, which=which)


def test_head_attribution_grid_matches_single_ablations(client, cfg):
    import re
    from llm_core import interventions as iv
    grid, dla, md = client.predict(REPEAT, "", "zero", api_name="/head_attribution")
    cells = re.findall(r'data-layer="(\d+)" data-head="(\d+)"[^>]*title="layer \d+, head \d+: ([-+0-9.]+)', grid)
    assert len(cells) == cfg.n_layers * cfg.n_heads
    bundle = load_model(default_model_name())
    ids = bundle.tokenizer.encode(REPEAT)
    with torch.inference_mode():
        logits = bundle.model(torch.tensor([ids]))[0, -1]
        target = int(logits.argmax())
        clean = torch.log_softmax(logits, -1)[target]
        lay, h = int(cells[5][0]), int(cells[5][1])
        single = torch.log_softmax(iv.ablate_heads(bundle, ids, [(lay, h)])[0, -1], -1)[target] - clean
    assert float(cells[5][2]) == pytest.approx(float(single), abs=2e-4)
    data = _figure(dla)["data"]
    assert data[0]["type"] == "heatmap" and [d["name"] for d in data[1:]] == ["attention", "MLP"]
    assert "direct logit attribution" in md and "LayerNorm" in md and "add up to" in md


def test_head_attribution_for_a_chosen_token_and_refusals(client):
    grid, _, md = client.predict(REPEAT, " values", "mean", api_name="/head_attribution")
    assert "the token you chose" in md and "values" in md
    with pytest.raises(AppError, match="not one"):
        client.predict(REPEAT, " catalogue", "zero", api_name="/head_attribution")
    with pytest.raises(AppError, match="at most"):
        client.predict(" list" * 500, "", "zero", api_name="/head_attribution")


def test_huge_inputs_are_refused_on_the_server(client):
    with pytest.raises(AppError, match="limit"):
        _ko(client, "0.0, " * 10_000)
    with pytest.raises(AppError, match="limit"):
        client.predict(REPEAT, "x" * 1_000, "zero", api_name="/head_attribution")


def test_quotes_in_tokens_are_shown_as_quotes(client):
    head_map = _figure(_predict(client, prompt='say "hi" and "bye"')[1])
    ticks = head_map["layout"]["yaxis"]["ticktext"]
    assert any('"' in t for t in ticks) and not any("&quot;" in t for t in ticks)
