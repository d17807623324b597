"""Chat with an instruction-tuned model (chapter 7.2's template, turn after turn).

A conversation becomes one Alpaca prompt: the book's intro once, then each earlier turn as
``### Instruction:`` / ``### Response:``, then the new message with an empty response for the
model to fill. With no earlier turns this is exactly ``format_input`` + the response header.
When the prompt would not leave room for the answer in the model's context, the oldest turns
are dropped (the caller shows how many).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import torch

from .generation import IncrementalDecoder, SamplingSettings, make_generator, stream_generate
from .instruct_data import PROMPT_INTRO, RESPONSE_HEADER, extract_response, format_input

MAX_MESSAGE_CHARS = 2000   # longer text cannot fit any shipped model's context anyway
MIN_ANSWER_TOKENS = 8      # a prompt must leave at least this much room to answer
NO_ANSWER = "(no answer: the model ended its response straight away)"  # shown, never fed back
NOT_SENT = "⚠️ Not sent: "  # starts a notice shown in place of an answer; that turn is never fed back
SECTION_START = "\n\n### "  # the template's next header: the answer is over


class ChatError(ValueError):
    """A message that cannot be sent (the text says why and what to do)."""


@dataclass
class ChatPrompt:
    text: str
    ids: list[int]
    dropped_turns: int          # earlier turns left out to fit the context
    kept_turns: int
    context_length: int
    answer_room: int            # tokens left for the answer

    @property
    def n_tokens(self) -> int:
        return len(self.ids)


def content_text(content) -> str:
    """Message content as text: a string (API) or a list of parts / a dict (the browser)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        if "text" in content:
            return str(content["text"] or "")
        return content_text(content.get("content"))
    if isinstance(content, (list, tuple)):
        return "".join(content_text(part) for part in content)
    return str(content)


def history_turns(history) -> list[tuple[str, str]]:
    """(user, assistant) pairs from a messages-style history (dicts with role/content) or pairs."""
    turns: list[tuple[str, str]] = []
    pending: str | None = None
    for item in history or []:
        if isinstance(item, (list, tuple)) and len(item) == 2 and not isinstance(item[0], dict):
            answer = content_text(item[1])
            if not answer.startswith(NOT_SENT):
                turns.append((content_text(item[0]), "" if answer.strip() == NO_ANSWER else answer))
            continue
        role = item.get("role") if isinstance(item, dict) else getattr(item, "role", None)
        content = item.get("content") if isinstance(item, dict) else getattr(item, "content", None)
        text = content_text(content)
        if role == "user":
            if pending is not None:
                turns.append((pending, ""))
            pending = text
        elif role == "assistant":
            if pending is None:
                continue  # an assistant message with no question (e.g. a notice): not part of the prompt
            if not text.startswith(NOT_SENT):  # a message that was refused is not part of the talk
                turns.append((pending, "" if text.strip() == NO_ANSWER else text))
            pending = None
    if pending is not None:
        turns.append((pending, ""))
    return turns


def _turn_block(instruction: str, input_text: str = "") -> str:
    """One instruction (and input) in the book's template, without the intro."""
    return format_input({"instruction": instruction, "input": input_text})[len(PROMPT_INTRO):]


def chat_prompt_text(turns: list[tuple[str, str]], message: str, input_text: str = "") -> str:
    text = PROMPT_INTRO
    for user, answer in turns:
        text += _turn_block(user) + RESPONSE_HEADER + answer.strip()
    return text + _turn_block(message, input_text) + RESPONSE_HEADER


def check_message(message) -> str:
    text = content_text(message)
    if not text.strip():
        raise ChatError("The message is empty: type a question or an instruction.")
    if len(text) > MAX_MESSAGE_CHARS:
        raise ChatError(f"The message has {len(text):,} characters; the limit is {MAX_MESSAGE_CHARS:,}. "
                        "Ask something shorter.")
    return text.strip()


def build_chat_prompt(history, message: str, tokenizer, context_length: int, input_text: str = "",
                      answer_tokens: int = 32) -> ChatPrompt:
    """The prompt for ``message`` after ``history``, newest turns kept, fitting ``context_length``
    with room for ``answer_tokens`` (at least MIN_ANSWER_TOKENS). Special-token literals in any
    text stay plain text."""
    message = check_message(message)
    input_text = content_text(input_text).strip()
    turns = history_turns(history)
    reserve = max(MIN_ANSWER_TOKENS, min(int(answer_tokens), context_length // 2))
    budget = context_length - reserve
    for dropped in range(len(turns) + 1):
        kept = turns[dropped:]
        text = chat_prompt_text(kept, message, input_text)
        ids = tokenizer.encode_ordinary(text)
        if len(ids) <= budget:
            return ChatPrompt(text, ids, dropped, len(kept), context_length, context_length - len(ids))
    raise ChatError(f"The message needs {len(ids):,} tokens with the template, and this model sees "
                    f"{context_length:,} tokens in all, {reserve} of them kept for the answer. "
                    "Shorten the message (or lower max new tokens).")


@dataclass
class ChatReply:
    text: str = ""
    tokens: int = 0
    stopped_at_eos: bool = False   # the model ended the answer (end-of-text or a new "### " section)
    ids: list[int] = field(default_factory=list)


def _visible(raw: str) -> str:
    """The answer so far, without a trailing piece that may be the start of a "### " header."""
    for n in range(min(len(SECTION_START) - 1, len(raw)), 0, -1):
        if SECTION_START.startswith(raw[-n:]):
            raw = raw[:-n]
            break
    return extract_response(raw, "")


def stream_reply(model, tokenizer, prompt: ChatPrompt, settings: SamplingSettings,
                 generator: torch.Generator | None = None) -> Iterator[ChatReply]:
    """The answer as it grows, one ChatReply per token; ends at <|endoftext|>, at the next
    ``### Instruction`` header the model starts on its own, or when the context is full."""
    eos = getattr(tokenizer, "eot_id", None)
    room = min(int(settings.max_new_tokens), prompt.answer_room)
    settings = settings.with_(max_new_tokens=room, eos_id=eos)
    decoder = IncrementalDecoder(tokenizer)
    reply = ChatReply()
    raw = ""
    for step in stream_generate(model, prompt.ids, settings, generator=generator,
                                vocab_size=tokenizer.n_vocab, details=False):
        if step.is_eos:
            reply.stopped_at_eos = True
            break
        reply.ids.append(step.token_id)
        reply.tokens += 1
        raw += decoder.feed(step.token_id)
        cut = raw.find(SECTION_START)
        if cut >= 0:  # the model began a new section: the answer is over
            reply.text = extract_response(raw[:cut], "")
            reply.stopped_at_eos = True
            yield reply
            return
        reply.text = _visible(raw)
        yield reply
    raw += decoder.flush()
    reply.text = extract_response(raw, "")
    yield reply


@dataclass
class Turn:
    """One message of a scripted conversation and what came back."""
    message: str
    answer: str
    tokens: int
    ended: bool          # the model ended the answer itself
    prompt_tokens: int
    context_length: int
    dropped_turns: int


def converse(model, tokenizer, messages, settings: SamplingSettings, seed: int | None = None,
             inputs=None) -> list[Turn]:
    """Send ``messages`` one after another as the Chat tab does, each answer becoming part of the
    next prompt (an empty one fed back as NO_ANSWER). ``seed``: every message sampled from a fresh
    generator with that seed, as the tab's seed box does; ``inputs``: an input text per message."""
    history: list[dict] = []
    turns = []
    for i, message in enumerate(messages):
        prompt = build_chat_prompt(history, message, tokenizer, model.cfg.context_length,
                                   inputs[i] if inputs else "", settings.max_new_tokens)
        reply = ChatReply()
        for reply in stream_reply(model, tokenizer, prompt, settings,
                                  make_generator(seed) if seed is not None else None):
            pass
        turns.append(Turn(message, reply.text, reply.tokens, reply.stopped_at_eos, prompt.n_tokens,
                          prompt.context_length, prompt.dropped_turns))
        history += [{"role": "user", "content": message}, {"role": "assistant", "content": reply.text or NO_ANSWER}]
    return turns
