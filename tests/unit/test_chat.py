"""Chat core: the book's Alpaca template turn after turn, truncation, bad messages, streaming stops."""
from types import SimpleNamespace

import pytest
import torch

import llm_core.chat as chat
from llm_core.chat import NO_ANSWER, ChatError, build_chat_prompt, history_turns, stream_reply
from llm_core.config import GPTConfig
from llm_core.generation import SamplingSettings, make_generator
from llm_core.model import build_untrained
from llm_core.registry import load_model
from llm_core.tokenizers import bpe_from_merges

# Byte-level tokenizer: one token per byte, so lengths are easy to reason about.
TOK = bpe_from_merges("bytes", {bytes([i]): i for i in range(256)})
BIG_CTX = 4096

# The book's format_input text (chapter 7.2), written out here rather than rebuilt.
INTRO = ("Below is an instruction that describes a task. "
         "Write a response that appropriately completes the request.")


def test_single_turn_is_the_books_template_exactly():
    p = build_chat_prompt([], "Reverse the following word.", TOK, BIG_CTX)
    assert p.text == INTRO + "\n\n### Instruction:\nReverse the following word.\n\n### Response:\n"
    assert p.dropped_turns == 0 and p.kept_turns == 0
    assert TOK.decode(p.ids) == p.text


def test_single_turn_with_input_has_the_input_section():
    p = build_chat_prompt([], "Reverse the following word.", TOK, BIG_CTX, input_text="python")
    assert p.text == (INTRO + "\n\n### Instruction:\nReverse the following word."
                      "\n\n### Input:\npython\n\n### Response:\n")
    blank = build_chat_prompt([], "Hi", TOK, BIG_CTX, input_text="   ")
    assert "### Input:" not in blank.text  # whitespace-only input is no input


def test_earlier_turns_come_first_in_api_and_browser_message_shapes():
    api = [{"role": "user", "content": "A"}, {"role": "assistant", "content": "B"}]
    browser = [{"role": "user", "content": [{"type": "text", "text": "A"}]},
               {"role": "assistant", "content": [{"type": "text", "text": "B"}]}]
    expected = (INTRO + "\n\n### Instruction:\nA\n\n### Response:\nB"
                "\n\n### Instruction:\nC\n\n### Response:\n")
    assert build_chat_prompt(api, "C", TOK, BIG_CTX).text == expected
    assert build_chat_prompt(browser, "C", TOK, BIG_CTX).text == expected
    assert build_chat_prompt([("A", "B")], "C", TOK, BIG_CTX).text == expected


def test_history_turns_skips_notices_and_the_no_answer_placeholder():
    history = [{"role": "assistant", "content": "Welcome!"},   # no question before it
               {"role": "user", "content": "Q1"}, {"role": "assistant", "content": NO_ANSWER},
               {"role": "user", "content": "Q2"}]
    assert history_turns(history) == [("Q1", ""), ("Q2", "")]


def test_truncation_keeps_the_newest_turns_and_counts_the_dropped():
    tok = load_model("pydoc-gpt").tokenizer  # the shipped model's tokenizer and its 128-token context
    history = []
    for k in range(8):
        history += [{"role": "user", "content": f"Question number {k} about lists"},
                    {"role": "assistant", "content": f"Answer number {k}"}]
    p = build_chat_prompt(history, "Last question", tok, 128, answer_tokens=32)
    assert 0 < p.dropped_turns < 8
    assert p.dropped_turns + p.kept_turns == 8
    assert p.n_tokens <= 128 - 32 and p.answer_room == 128 - p.n_tokens
    kept = range(p.dropped_turns, 8)
    assert all(f"Question number {k} " in p.text for k in kept)
    assert not any(f"Question number {k} " in p.text for k in range(p.dropped_turns))
    assert p.text.endswith("### Instruction:\nLast question\n\n### Response:\n")
    # as many as fit: one more of the older turns would not
    one_more = history_turns(history)[p.dropped_turns - 1:]
    assert len(tok.encode_ordinary(chat.chat_prompt_text(one_more, "Last question"))) > 128 - 32


@pytest.mark.parametrize("message,match", [
    ("", "empty"), ("   \n ", "empty"),
    ("x" * (chat.MAX_MESSAGE_CHARS + 1), "characters"),
    ("word " * 300, "tokens"),  # under the character limit but longer than the context
])
def test_bad_messages_raise_chat_error(message, match):
    tok = load_model("pydoc-gpt").tokenizer
    with pytest.raises(ChatError, match=match):
        build_chat_prompt([], message, tok, 128)


def test_special_token_literal_is_plain_text():
    literal = "Say <|endoftext|> twice <|endoftext|>"
    p = build_chat_prompt([], literal, TOK, BIG_CTX)
    assert TOK.eot_id not in p.ids
    assert TOK.decode(p.ids) == p.text and literal in p.text
    tok = load_model("pydoc-gpt").tokenizer
    q = build_chat_prompt([], literal, tok, 128)
    assert tok.eot_id not in q.ids and tok.decode(q.ids) == q.text


def _scripted(token_ids, eos=None):
    """A stand-in for stream_generate that picks the given tokens in order."""
    def fake(model, ids, settings, generator=None, vocab_size=None, details=True):
        for i, t in enumerate(token_ids[:settings.max_new_tokens]):
            yield SimpleNamespace(token_id=t, is_eos=t == settings.eos_id)
            if t == settings.eos_id:
                return
    return fake


def test_stream_reply_grows_and_stops_at_a_new_section_header(monkeypatch):
    said = "olleh\n\n### Instruction:\nmore"
    monkeypatch.setattr(chat, "stream_generate", _scripted(TOK.encode_ordinary(said)))
    prompt = build_chat_prompt([], "Reverse the word hello.", TOK, BIG_CTX)
    replies = [r.text for r in stream_reply(None, TOK, prompt, SamplingSettings(max_new_tokens=100))]
    assert replies[-1] == "olleh"
    assert all("#" not in r for r in replies)  # a header never shows, not even half of one
    assert [r for r in replies if r][:5] == ["o", "ol", "oll", "olle", "olleh"]
    assert len(replies) < len(said)  # generation ended at the header


def test_stream_reply_stops_at_end_of_text(monkeypatch):
    ids = TOK.encode_ordinary("yes") + [TOK.eot_id] + TOK.encode_ordinary("no more")
    monkeypatch.setattr(chat, "stream_generate", _scripted(ids))
    prompt = build_chat_prompt([], "Is it?", TOK, BIG_CTX)
    replies = list(stream_reply(None, TOK, prompt, SamplingSettings(max_new_tokens=50)))
    assert replies[-1].text == "yes" and replies[-1].stopped_at_eos and replies[-1].tokens == 3


def test_stream_reply_with_a_real_model_ends_at_eos_and_respects_the_room():
    cfg = GPTConfig(vocab_size=TOK.n_vocab, context_length=256, emb_dim=32, n_heads=2, n_layers=1, drop_rate=0.0)
    model = build_untrained(cfg, seed=3).eval()
    prompt = build_chat_prompt([], "Hi", TOK, cfg.context_length, answer_tokens=8)
    replies = list(stream_reply(model, TOK, prompt, SamplingSettings(max_new_tokens=200), make_generator(1)))
    assert 1 <= replies[-1].tokens <= prompt.answer_room  # never past the context
    # a head that always picks <|endoftext|>: the answer is empty and ends at once
    head = torch.nn.Linear(cfg.emb_dim, cfg.vocab_size)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[TOK.eot_id] = 10.0
    model.out_head = head
    replies = list(stream_reply(model, TOK, prompt, SamplingSettings(max_new_tokens=20)))
    assert replies[-1].text == "" and replies[-1].stopped_at_eos and replies[-1].tokens == 0


def test_refused_messages_are_left_out_of_later_prompts():
    history = [{"role": "user", "content": "too long"},
               {"role": "assistant", "content": chat.NOT_SENT + "The message needs 300 tokens"},
               {"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]
    assert history_turns(history) == [("Q", "A")]
    assert history_turns([("too long", chat.NOT_SENT + "no"), ("Q", "A")]) == [("Q", "A")]


def test_instruct_tune_scores_computed_tasks_apart_from_doc_questions():
    from llm_core.instruct_data import doc_tasks, builtin_instructions, split_instructions, stdlib_docs
    from llm_core.instruct_tune import held_out_sets

    data = builtin_instructions()
    sets = held_out_sets(data, n_computed=40, n_doc=10)
    _, test, val = split_instructions(data.entries)
    doc_keys = {(e["instruction"], e["input"]) for e in doc_tasks(stdlib_docs())}
    assert sets["val"] == val and len(sets["computed"]) == 40
    assert all(e in test and (e["instruction"], e["input"]) not in doc_keys for e in sets["computed"])
    assert all(e["check"] == "exact" for e in sets["computed"] + sets["doc_exact"])
    assert all((e["instruction"], e["input"]) in doc_keys for e in sets["doc_exact"] + sets["doc_similar"])
    assert all(e["check"] == "similar" for e in sets["doc_similar"])


def test_tuning_dropout_reaches_every_dropout_and_only_in_training():
    from llm_core.instruct_tune import set_dropout

    cfg = GPTConfig(vocab_size=50, context_length=16, emb_dim=32, n_heads=2, n_layers=2, drop_rate=0.0)
    model, ids = build_untrained(cfg, seed=3), torch.tensor([[1, 2, 3, 4, 5, 6]])
    set_dropout(model, 0.5)
    rates = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert len(rates) == 1 + 2 * model.cfg.n_layers and set(rates) == {0.5}  # embeddings, attention, shortcut
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(ids), model(ids))
        model.train()
        torch.manual_seed(0)
        assert not torch.equal(model(ids), model(ids))


def test_shipped_instruct_model_loads_beside_the_base():
    from llm_core.registry import builtin_names, model_choices

    assert {"pydoc-gpt", "pydoc-gpt-instruct"} <= set(builtin_names())
    assert ("pydoc-gpt-instruct (built-in)", "pydoc-gpt-instruct") in model_choices()
    tuned, base = load_model("pydoc-gpt-instruct"), load_model("pydoc-gpt")
    assert tuned.config == base.config and tuned.tokenizer.n_vocab == base.tokenizer.n_vocab
    assert tuned.meta["base_model"] == "pydoc-gpt"
    # Tuned on the response only, so the held-out answers measure it (the whole-prompt loss may rise).
    before, after = tuned.meta["before"], tuned.meta["after"]
    assert after["doc_exact"] > before["doc_exact"] and after["assistant"] > before["assistant"]
    assert not torch.equal(tuned.model.tok_emb.weight, base.model.tok_emb.weight)  # really tuned


def test_shipped_instruct_model_ends_its_chat_answers():
    """Through the Chat tab's own path, greedy: each answer ends with end-of-text, not the length limit."""
    from llm_core.chat import build_chat_prompt, stream_reply
    from llm_core.generation import SamplingSettings, make_generator

    bundle = load_model("pydoc-gpt-instruct")
    settings = SamplingSettings(temperature=0.0, max_new_tokens=48)
    for message in ("Hello! Who are you?", "What does len() do?"):
        prompt = build_chat_prompt([], message, bundle.tokenizer, bundle.config.context_length, "", 48)
        reply = None
        for reply in stream_reply(bundle.model, bundle.tokenizer, prompt, settings, make_generator(123)):
            pass
        assert reply is not None and reply.text.strip() and reply.stopped_at_eos, (message, reply)
