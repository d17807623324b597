"""Generate tab: the streaming endpoint, branching, compare, the temperature plot, the KV-cache
timing, and bad input (through gradio_client and by calling the handlers)."""
import html
import types

import gradio as gr
import pytest
from gradio_client.exceptions import AppError

import tabs.generate as G
from llm_core import load_model
from llm_core.generation import generate as core_generate
from llm_core.registry import default_model_name

# prompt, temperature, top-k, top-p, max new tokens, seed, stop at <|endoftext|>, KV cache
SAMPLED = ["The for statement is", 0.9, 40, 0.95, 24, 11, False, True]
GREEDY = ["The for statement is", 0.0, 0, 1.0, 16, 1, False, True]


def final(gen):
    return list(gen)[-1]


def stream(client, args):
    return list(client.submit(*args, api_name="/generate"))


@pytest.fixture(scope="module")
def model_name():
    return default_model_name()


def test_generate_streams_text_and_returns_candidates(client):
    outputs = stream(client, SAMPLED)
    assert len(outputs) >= 2                       # the first token arrives before the end
    first_text, final_text = outputs[0][1], outputs[-1][1]
    assert first_text.startswith(SAMPLED[0]) and final_text.startswith(SAMPLED[0])
    assert len(final_text) > len(first_text) >= len(SAMPLED[0])
    data = outputs[-1][3]
    steps = data["steps"]
    assert len(steps) == 24 and [s["step"] for s in steps] == list(range(1, 25))
    for s in steps:
        assert 1 <= len(s["candidates"]) <= G.N_CANDIDATES
        ps = [c["p"] for c in s["candidates"]]
        assert ps == sorted(ps, reverse=True)
        assert 0 < s["p"] <= 1 and 0 < s["p_sampled"] <= 1 and s["entropy_bits"] >= 0
        assert s["kept"] <= 40                      # top-k 40 left at most 40 tokens
    tok = load_model(data["model"]).tokenizer
    assert final_text == SAMPLED[0] + tok.decode([s["token_id"] for s in steps])
    assert data["settings"]["strategy"] == "top-k 40 → T 0.9 → top-p 0.95"
    assert "24 tokens" in outputs[-1][2] and "tokens/s" in outputs[-1][2]
    # every generated token is a clickable, escaped span in the coloured output
    assert outputs[-1][0].count('class="gen-tok') == 24


def test_same_seed_same_text_and_greedy_is_argmax(client):
    a, b = stream(client, SAMPLED)[-1], stream(client, SAMPLED)[-1]
    assert a[1] == b[1]
    greedy = stream(client, GREEDY)[-1][3]["steps"]
    for s in greedy:
        assert s["token_id"] == s["candidates"][0]["token_id"] and s["p_sampled"] == 1.0


def test_cache_off_gives_the_same_tokens(client):
    on = stream(client, SAMPLED)[-1][1]
    off = stream(client, SAMPLED[:-1] + [False])[-1][1]
    assert on == off


def test_empty_prompt_starts_from_endoftext(client):
    out = stream(client, ["", 1.0, 0, 1.0, 5, 3, False, True])[-1]
    assert out[3]["prompt_tokens"] == 1 and len(out[3]["steps"]) == 5
    assert "&lt;|endoftext|&gt;" in out[0]
    assert "<|" not in out[2] and "generating from <|endoftext|>" in html.unescape(out[2])  # escaped in the Markdown


def test_long_prompt_is_truncated_from_the_left_with_a_notice(client, model_name):
    ctx = load_model(model_name).config.context_length
    out = stream(client, ["word " * (ctx + 40), 0.0, 0, 1.0, 3, 1, False, True])[-1]
    assert out[3]["prompt_tokens"] == ctx and out[3]["dropped_prompt_tokens"] >= 40
    assert "truncated from the left" in out[2]


def test_odd_unicode_and_special_literal_are_escaped(client):
    prompt = "<b>🦙 naïve</b> \u202e<|endoftext|>"
    out = stream(client, [prompt, 1.0, 0, 1.0, 4, 5, False, True])[-1]
    assert out[1].startswith(prompt)
    assert "<b>🦙" not in out[0] and html.escape("<b>🦙") in out[0]


@pytest.mark.parametrize("args, message", [
    # the sliders' own range check answers API callers first
    (["hi", 1.0, -1, 1.0, 5, 1, True, True], "less than minimum value 0"),
    (["hi", 1.0, 0, 0.0, 5, 1, True, True], "less than minimum"),
    (["hi", 1.0, 0, 1.5, 5, 1, True, True], "greater than maximum value 1"),
    (["hi", 50.0, 0, 1.0, 5, 1, True, True], "greater than maximum"),
    (["hi", 1.0, 0, 1.0, 10_000, 1, True, True], f"greater than maximum value {G.MAX_NEW_TOKENS}"),
    (["hi", 1.0, 0, 1.0, 5, -3, True, True], "less than minimum"),
    (["x" * (G.MAX_PROMPT_CHARS + 1), 1.0, 0, 1.0, 5, 1, True, True], "prompt has"),
])
def test_bad_input_through_the_api(client, args, message):
    with pytest.raises(AppError, match=message):
        client.predict(*args, api_name="/generate")


@pytest.mark.parametrize("knobs, message", [
    # temperature, top-k, top-p, max new tokens, seed
    ((50.0, 0, 1.0, 5, 1), "Temperature must be at most"),
    (("warm", 0, 1.0, 5, 1), "Temperature must be a number"),
    ((float("nan"), 0, 1.0, 5, 1), "Temperature"),
    ((1.0, -1, 1.0, 5, 1), "Top-k"),
    ((1.0, 10**7, 1.0, 5, 1), "Top-k"),
    ((1.0, 0, 0.0, 5, 1), "Top-p"),
    ((1.0, 0, 1.5, 5, 1), "Top-p"),
    ((1.0, 0, 1.0, 0, 1), "Max new tokens"),
    ((1.0, 0, 1.0, 5, -3), "Seed"),
])
def test_bad_knobs_in_the_handler(model_name, knobs, message):
    t, k, p, n, seed = knobs
    with pytest.raises(gr.Error, match=message):
        final(G.generate_text("hi", t, k, p, n, seed, True, True, model_name))


def test_negative_temperature_means_greedy_and_says_so(model_name):
    run = final(G.generate_text("hi", -1.0, 0, 1.0, 4, 1, False, True, model_name))[-1]
    assert run["settings"]["strategy"].startswith("greedy")
    assert any("greedily" in n for n in run["notices"])


def test_max_new_tokens_above_the_cap_is_capped(model_name):
    settings, notices = G.read_settings(1.0, 0, 1.0, 10_000, True, True, load_model(model_name))
    assert settings.max_new_tokens == G.MAX_NEW_TOKENS
    assert any("cap" in n for n in notices)


# ---------------------------------------------------------------- branching and steps (handlers)

def test_branch_forces_the_alternative_and_continues(model_name):
    run = final(G.generate_text(*GREEDY, model_name))[-1]
    alt = run["steps"][3]["candidates"][2]["token_id"]
    new = final(G.branch(run, 4, alt, *GREEDY[1:], model_name))[-1]
    assert [s["token_id"] for s in new["steps"][:3]] == [s["token_id"] for s in run["steps"][:3]]
    assert new["steps"][3]["token_id"] == alt and new["steps"][3]["forced"]
    assert len(new["steps"]) == GREEDY[4]               # the same total length
    assert new["branch"]["at"] == 3
    # greedy continuation from the forced prefix is what the core generates from there
    bundle = load_model(model_name)
    prefix = new["prompt_ids"] + [s["token_id"] for s in new["steps"][:4]]
    import torch
    expect = core_generate(bundle.model, torch.tensor([prefix]), GREEDY[4] - 4)[0, len(prefix):].tolist()
    assert [s["token_id"] for s in new["steps"][4:]] == expect


def test_branch_bad_input(model_name):
    with pytest.raises(gr.Error, match="Generate some text first"):
        final(G.branch(None, 1, 5, *GREEDY[1:], model_name))
    run = final(G.generate_text(*GREEDY, model_name))[-1]
    with pytest.raises(gr.Error, match="Step"):
        final(G.branch(run, 999, 5, *GREEDY[1:], model_name))
    with pytest.raises(gr.Error, match="Choose"):
        final(G.branch(run, 2, None, *GREEDY[1:], model_name))
    not_a_candidate = next(i for i in range(1000) if i not in {c["token_id"] for c in run["steps"][1]["candidates"]})
    with pytest.raises(gr.Error, match="candidates"):
        final(G.branch(run, 2, not_a_candidate, *GREEDY[1:], model_name))
    with pytest.raises(gr.Error, match="active model"):
        final(G.branch(run, 2, run["steps"][1]["candidates"][1]["token_id"], *GREEDY[1:], "untrained:mini"))


def test_select_step_and_click(model_name):
    run = final(G.generate_text(*SAMPLED, model_name))[-1]
    page, detail, fig, entropy, choices = G.select_step(run, 5)
    assert 'data-step="4"' in page and "gen-sel" in page
    assert detail.startswith("**Step 5**")
    assert len(fig.data) == 2 and fig.data[0].x.shape[0] >= len(run["steps"][4]["candidates"])
    assert run["steps"][4]["token_id"] not in [v for _, v in choices["choices"]]
    assert G.select_step(run, 10**6)[1].startswith(f"**Step {len(run['steps'])}**")  # clamped
    click = types.SimpleNamespace(_data={"step": 6})
    assert G.clicked_step(run, click)["value"] == 7
    assert G.clicked_step(run, types.SimpleNamespace(_data={})) is not None  # ignored, no error


# ---------------------------------------------------------------- temperature plot, compare, speed

def test_temperature_plot_reproduces_the_book(client):
    fig, note = G.temperature_plot(G.TEMP_SOURCE_BOOK, "0.1, 1, 5", None, 1)
    assert [tr.name for tr in fig.data] == ["T = 0.1", "T = 1", "T = 5"]
    assert fig.data[2].y[list(fig.data[2].customdata).index("pizza")] == pytest.approx(0.043, abs=5e-4)
    assert "forward" in note
    plot, text = client.predict(G.TEMP_SOURCE_BOOK, "0.5, 2", 1, api_name="/temperature_plot")
    assert "T = 2" in plot["plot"] and "| 0.5 |" in text


@pytest.mark.parametrize("temps, message", [("", "List"), ("abc", "not a number"), ("0", "out of range"),
                                            ("-1", "out of range"), ("1,2,3,4,5,6,7", "at most")])
def test_temperature_plot_bad_input(client, temps, message):
    with pytest.raises(AppError, match=message):
        client.predict(G.TEMP_SOURCE_BOOK, temps, 1, api_name="/temperature_plot")


def test_temperature_plot_on_a_real_step(model_name):
    with pytest.raises(gr.Error, match="Generate some text first"):
        G.temperature_plot(G.TEMP_SOURCE_STEP, "1", None, 1)
    run = final(G.generate_text(*SAMPLED, model_name))[-1]
    fig, _ = G.temperature_plot(G.TEMP_SOURCE_STEP, "1", run, 3)
    # at T = 1 the bars are the model's probabilities recorded for that step
    recorded = [c["p"] for c in run["steps"][2]["candidates"]]
    assert list(fig.data[0].y) == pytest.approx(recorded, rel=1e-3)


def test_compare_streams_two_settings(client):
    args = ["The for statement is", 0.0, 0, 1.0, 0.0, 0, 1.0, 10, 3, False, True]
    outputs = list(client.submit(*args, api_name="/generate_compare"))
    a, b, table = outputs[-1]
    assert a == b and "greedy" in table and "| tokens | 10 | 10 |" in table
    a, b, table = client.predict(*(args[:1] + [1.5, 0, 1.0] + args[4:]), api_name="/generate_compare")
    assert "T 1.5" in table and "surprisal" in table
    with pytest.raises(AppError, match="greater than maximum"):
        client.predict(*(args[:6] + [2.0] + args[7:]), api_name="/generate_compare")
    with pytest.raises(gr.Error, match="B: Top-k"):  # the handler names the side
        list(G.compare(*(args[:5] + [-2] + args[6:]), default_model_name()))


def test_kv_cache_timing(client):
    out = client.predict("The for statement is", 12, api_name="/generate_speed")
    assert "KV cache on | 12 |" in out and "KV cache off | 12 |" in out
    assert "Both produced the same tokens" in out
    with pytest.raises(AppError, match="less than minimum"):
        client.predict("hi", 0, api_name="/generate_speed")
    with pytest.raises(gr.Error, match="Max new tokens"):
        G.measure_cache("hi", 0, default_model_name())


def test_int8_precision_generates_and_says_so(client):
    # The same greedy run in fp32 and int8: the int8 copy of the shipped model agrees on the
    # first tokens (quality bounds are measured in tests/unit/test_quantize.py).
    fp32 = stream(client, GREEDY + ["fp32"])[-1]
    int8 = stream(client, GREEDY + ["int8"])[-1]
    assert "fp32 weights" in fp32[2] and "int8 weights" in int8[2]
    assert int8[3]["steps"][0]["token_id"] == fp32[3]["steps"][0]["token_id"]
    assert len(int8[3]["steps"]) == GREEDY[4]
    out = client.predict("The for statement is", 8, "int8", api_name="/generate_speed")
    assert "int8 weights" in out and "KV cache on | 8 |" in out
    with pytest.raises(AppError):  # not one of the radio's choices
        client.predict(*GREEDY, "int4", api_name="/generate")
    with pytest.raises(gr.Error, match="Precision must be one of"):
        final(G.generate_text(*GREEDY, default_model_name(), "int4"))


def test_inspect_a_step_gives_the_context_the_model_saw():
    name = default_model_name()
    tok = load_model(name).tokenizer
    prompt_ids = tok.encode("The list is")
    chosen = tok.encode(" a list of values")
    run = {"model": name, "prompt_ids": prompt_ids, "steps": [{"token_id": t} for t in chosen]}
    tabs, text, position, target = G.inspect_step(run, 3, "attention")     # step 3 chose ' of'
    assert tabs.selected == "attention"
    assert text == tok.decode(prompt_ids + chosen[:2])
    assert position == len(tok.encode(text)) - 1
    assert target == tok.decode([chosen[2]]) and tok.encode(target) == [chosen[2]]
    assert G.inspect_in_architecture(run, 1)[0].selected == "architecture"
    with pytest.raises(gr.Error, match="Generate some text first"):
        G.inspect_step(None, 1, "attention")


def test_streamed_updates_carry_markup_only_and_the_page_css_has_its_classes(client):
    """The styles are loaded once with the page (assets/style.css), not re-sent with every token."""
    import re
    from pathlib import Path

    import app

    html_out = stream(client, SAMPLED)[-1][0]
    assert "<style" not in html_out
    css = Path(app.ASSETS, "style.css").read_text()
    used = set(re.findall(r'class="([^"]+)"', html_out))
    classes = {c for group in used for c in group.split()}
    assert classes and all(f".{c}" in css for c in classes), classes - {c for c in classes if f".{c}" in css}
