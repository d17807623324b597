"""Chat tab through the API: streaming answers, compare mode, bad messages, one history per session."""
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

import tabs.chat as C
from llm_core.chat import NOT_SENT
from tabs.chat import BASE, SHIPPED

INTRO = ("Below is an instruction that describes a task. "
         "Write a response that appropriately completes the request.")


def _args(message, model=SHIPPED, input_text="", compare=False, max_new=6, temperature=0.0, seed=123):
    # message, then the additional inputs: model, input, compare, temperature, top-k, top-p, max new, seed
    return [message, model, input_text, compare, temperature, 0, 1.0, max_new, seed]


def _answers(outputs):
    return [o[0] for o in outputs]


def test_chat_streams_a_growing_answer_and_shows_the_exact_prompt(client):
    outputs = list(client.submit(*_args("Reverse the following word.", input_text="python", max_new=8),
                                 api_name="/chat"))
    answers = [a for a in _answers(outputs) if a != "…"]
    assert len(outputs) >= 2 and answers and answers[-1]
    assert all(answers[-1].startswith(a) for a in answers)  # each update extends the last
    final_answer, prompt, usage, comparison = outputs[-1]
    assert prompt == (INTRO + "\n\n### Instruction:\nReverse the following word."
                      "\n\n### Input:\npython\n\n### Response:\n")
    from llm_core.registry import load_model

    assert f"of {load_model('pydoc-gpt-instruct').config.context_length}** context tokens" in usage
    assert comparison == ""


def test_compare_mode_gives_two_answers(client):
    outputs = list(client.submit(*_args("Convert the text to upper case.", input_text="hello world",
                                        compare=True, max_new=6), api_name="/chat"))
    final_answer, _, _, comparison = outputs[-1]
    assert comparison.count("<pre") == 2
    assert "pydoc-gpt-instruct" in comparison and "<h4>pydoc-gpt</h4>" in comparison
    assert final_answer  # the chosen model's answer is the chat's answer


def test_base_model_choice_answers_with_the_base(client):
    outputs = list(client.submit(*_args("Reverse the following word.", model=BASE, input_text="abc"),
                                 api_name="/chat"))
    assert outputs[-1][2].startswith("**pydoc-gpt**")


def test_special_token_literals_are_plain_text(client):
    literal = "Repeat <|endoftext|> please"
    outputs = list(client.submit(*_args(literal), api_name="/chat"))
    assert literal in outputs[-1][1]
    assert "<|endoftext|>" not in outputs[-1][0]  # the model's own end-of-text is never shown


@pytest.mark.parametrize("message,match", [
    ("", "empty"),
    ("   ", "empty"),
    ("word " * 300, "tokens"),
    ("x" * 2001, "characters"),
])
def test_bad_messages_get_a_not_sent_notice(client, message, match):
    # A refusal is the answer (with a warning), not an exception: the chat stays usable.
    answer, prompt, usage, _ = client.predict(*_args(message), api_name="/chat")
    assert answer.startswith(NOT_SENT) and match in answer
    assert prompt == "" and usage == ""


@pytest.mark.parametrize("over,match", [
    (dict(max_new=10_000), "greater than maximum value 120"),
    (dict(temperature=-1), "less than minimum value 0"),
    (dict(model="nonsense"), "not in the list of choices"),
])
def test_out_of_range_settings_are_rejected_before_the_model_runs(client, over, match):
    # Gradio checks sliders and radios against their ranges and choices (only the API can send these).
    with pytest.raises(AppError, match=match):
        client.predict(*_args("hi", **over), api_name="/chat")


def test_settings_are_checked_on_the_server_too():
    # The handler's own checks, for callers that skip the components (e.g. a Python import).
    answer = next(C.chat("hi", [], SHIPPED, "", False, 0.0, 0, 1.0, 10_000, 1, "pydoc-gpt"))[0]
    assert answer.startswith(NOT_SENT) and "Max new tokens" in answer
    answer = next(C.chat("hi", [], "nonsense", "", False, 0.0, 0, 1.0, 4, 1, "pydoc-gpt"))[0]
    assert answer.startswith(NOT_SENT) and "Unknown model choice" in answer


def test_your_finetuned_model_needs_a_run_first(app_url):
    fresh = Client(app_url, verbose=False)
    answer = fresh.predict(*_args("hi", model="your model from the Fine-tune tab"), api_name="/chat")[0]
    assert answer.startswith(NOT_SENT) and "Fine-tune tab" in answer


def test_each_session_sees_only_its_own_conversation(app_url):
    alice, bob = Client(app_url, verbose=False), Client(app_url, verbose=False)
    alice.predict(*_args("Alice asks about tuples.", max_new=2), api_name="/chat")
    alice.predict(*_args("word " * 300), api_name="/chat")  # refused: not part of her conversation
    bob.predict(*_args("Bob asks about sets.", max_new=2), api_name="/chat")
    alice_prompt = alice.predict(*_args("And lists?", max_new=2), api_name="/chat")[1]
    bob_prompt = bob.predict(*_args("And dicts?", max_new=2), api_name="/chat")[1]
    assert "Alice asks about tuples." in alice_prompt and "Bob" not in alice_prompt
    assert "word word" not in alice_prompt
    assert "Bob asks about sets." in bob_prompt and "Alice" not in bob_prompt


def test_int8_precision_answers_with_the_int8_copy(client):
    args = _args("Is the word a palindrome? Answer yes or no.", input_text="level")
    answer, _, usage, _ = client.predict(*args, "int8", api_name="/chat")
    assert "(int8)" in usage and answer and not answer.startswith(NOT_SENT)
    answer32, _, usage32, _ = client.predict(*args, "fp32", api_name="/chat")
    assert "(int8)" not in usage32 and answer32


def test_the_hubs_instruction_tuned_gpt2_is_the_default_when_cached_and_compares_with_gpt2(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    from llm_core import registry
    from llm_core.registry import INSTRUCT_GPT2
    from tests.hf_cache import use_cache, write_tiny_gpt2

    use_cache(monkeypatch, tmp_path)
    assert C.default_choice() == SHIPPED                     # nothing cached: the shipped model
    answer = next(C.chat("hi", [], C.HUB_INSTRUCT, "", False, 0.0, 0, 1.0, 4, 1, "pydoc-gpt"))[0]
    assert answer.startswith(NOT_SENT) and "not cached" in answer
    write_tiny_gpt2(tmp_path, INSTRUCT_GPT2, seed=1, n_positions=64)
    write_tiny_gpt2(tmp_path, "openai-community/gpt2", seed=2, n_positions=64)
    try:
        assert C.default_choice() == C.HUB_INSTRUCT
        *_, (answer, prompt, usage, comparison) = C.chat("Name a colour.", [], C.HUB_INSTRUCT, "", True,
                                                         0.0, 0, 1.0, 4, 1, "pydoc-gpt")
        assert not answer.startswith(NOT_SENT), answer
        assert prompt == INTRO + "\n\n### Instruction:\nName a colour.\n\n### Response:\n"
        assert f"<h4>{INSTRUCT_GPT2}</h4>" in comparison and "<h4>gpt2</h4>" in comparison
        assert "of 64** context tokens" in usage
    finally:
        registry.forget(INSTRUCT_GPT2)
        registry.forget("gpt2")
