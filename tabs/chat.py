"""Stage 9 · Chat: talk to the instruction-tuned model (chapter 7.2), see the exact prompt."""
from __future__ import annotations

import html

import gradio as gr
from gradio.components.chatbot import TextMessage

from llm_core.chat import (
    MAX_MESSAGE_CHARS, NO_ANSWER, NOT_SENT, ChatError, build_chat_prompt, content_text, stream_reply,
)
from llm_core.generation import SamplingSettings, make_generator, prepare_for_decoding
from llm_core.quantize import PRECISIONS
from llm_core.registry import GPT2_DEFAULT, INSTRUCT_GPT2, builtin_names, default_chat_model, default_model_name
from tabs.common import check_choice, check_float, check_int, check_text, get_bundle
from tabs.session_store import SESSIONS, session_key
from tabs.markup import html_text, md_text

INSTRUCT_MODEL = "pydoc-gpt-instruct"
BASE_MODEL = "pydoc-gpt"
MAX_NEW_TOKENS = 120
DEFAULT_MAX_NEW_TOKENS = 48

HUB_INSTRUCT = "instruction-tuned GPT-2 (Hub)"
SHIPPED, BASE, FINETUNED, ACTIVE = ("shipped instruct model", "plain base model",
                                    "your model from the Fine-tune tab", "active model (header)")
CHOICES = [HUB_INSTRUCT, SHIPPED, BASE, FINETUNED, ACTIVE]


def default_choice() -> str:
    """The instruction-tuned GPT-2 where it is cached (a Space preloads it), else the shipped one."""
    return HUB_INSTRUCT if default_chat_model() == INSTRUCT_GPT2 else SHIPPED

# (instruction, input): what the shipped model answers well and what it gets wrong, checked greedily
# on it with `python scripts/probe_prompts.py chat` (answers in assets/models/pydoc-gpt-instruct/
# TRAINING.md). The good ones are mostly answers it trained on (identity, scope, how-tos, a declined
# off-topic question, a docstring); the bad ones show it cannot count, spell or add, and mixes up
# docstrings it half remembers.
GOOD_EXAMPLES = [
    ["Hello! Who are you?", ""],
    ["What can you do?", ""],
    ["How do I sort a list in Python?", ""],
    ["What does dict.get() do?", ""],
    ["What is the capital of France?", ""],
]
BAD_EXAMPLES = [
    ["How many items are in the list?", "3, 9, 4, 7, 1, 8, 2"],
    ["Reverse the following word.", "python"],
    ["Add the two numbers.", "12, 30"],
    ["What does math.sqrt() do?", ""],
    ["What does os.path.join() do?", ""],
]


class PlainChatbot(gr.Chatbot):
    """A Chatbot that shows every message as typed: text is HTML-escaped on its way to the browser
    (render_markdown=False alone still lets <b> or <img> render) and unescaped on its way back, so
    the handler and the model see exactly what was typed."""

    is_template = True  # drawn by the browser as the Chatbot it extends

    def _postprocess_content(self, chat_message):
        out = super()._postprocess_content(chat_message)
        if isinstance(out, TextMessage):
            out.text = html_text(out.text, quote=False)
        return out

    def _preprocess_content(self, chat_message):
        out = super()._preprocess_content(chat_message)
        if isinstance(chat_message, TextMessage) and isinstance(out, dict):
            out["text"] = html.unescape(out["text"])
        return out


class MessageBox(gr.Textbox):
    """The chat's message box: a missing message (None from the API) arrives as "", which the
    handler answers with "the message is empty", instead of failing inside ChatInterface."""

    is_template = True  # drawn by the browser as the Textbox it extends

    def preprocess(self, payload):
        return "" if payload is None else super().preprocess(payload)


def _shared(name: str, precision: str = "fp32"):
    """A shared model by name, laid out for fast one-token steps (it is never trained in place);
    with ``int8``, its int8 copy (made once per model, CPU only)."""
    bundle = get_bundle(name)
    prepare_for_decoding(bundle.model)
    if precision == "fp32":  # a GPU copy when there is a CUDA GPU
        return bundle.name, bundle.for_precision("fp32"), bundle.tokenizer
    if bundle.model.device.type != "cpu":
        raise gr.Error(f"int8 decoding is a CPU path; {bundle.name} runs on {bundle.model.device}. Choose fp32.")
    return f"{bundle.name} (int8)", bundle.for_precision(precision), bundle.tokenizer


def resolve_models(choice: str, active_name: str, request: gr.Request | None, precision: str = "fp32"):
    """(label, model, tokenizer) of the chosen model, and a function giving the model to compare
    it with (loaded only when compare mode asks for it). Your own fine-tuned model always
    decodes in fp32 (it is yours alone: no shared int8 copy is kept for it)."""
    check_choice(precision, PRECISIONS, "Precision")

    def shared(name):
        return _shared(name, precision)

    fallback = default_model_name()
    installed = builtin_names()
    shipped = INSTRUCT_MODEL if INSTRUCT_MODEL in installed else fallback
    base = BASE_MODEL if BASE_MODEL in installed else fallback
    if choice == HUB_INSTRUCT:  # compared with the GPT-2 small it was tuned from
        return shared(INSTRUCT_GPT2), lambda: shared(GPT2_DEFAULT)
    if choice == SHIPPED:
        return shared(shipped), lambda: shared(base)
    if choice == BASE:
        return shared(base), lambda: shared(shipped)
    if choice == FINETUNED:
        res = SESSIONS.result(session_key(request))
        if res is None or res.task != "instruction":
            raise gr.Error("You have no instruction-tuned model in this session yet: train one in the "
                           "Fine-tune tab (task: Instruction following), or choose the shipped instruct model.")
        return ((f"your tuned {res.info.base_model}", res.model, res.tokenizer),
                lambda: shared(res.info.base_model or base))
    if choice == ACTIVE:
        return shared(active_name or fallback), lambda: shared(base)
    raise gr.Error(f"Unknown model choice {choice!r}; pick one of: {', '.join(CHOICES)}.")


def _usage(prompt, label: str) -> str:
    used, ctx = prompt.n_tokens, prompt.context_length
    text = (f"**{md_text(label)}**: the prompt uses **{used} of {ctx}** context tokens "
            f"({100 * used / ctx:.0f} %); up to {prompt.answer_room} are left for the answer.")
    if prompt.dropped_turns:
        text += (f"\n\n⚠️ **{prompt.dropped_turns} older turn(s) dropped** to fit the context: "
                 f"the model sees only the last {prompt.kept_turns} turn(s) and this message.")
    return text


def compare_html(main_label: str, main_text: str, other_label: str, other_text: str) -> str:
    """Two answers side by side (all text escaped)."""
    cols = "".join(
        f"<div class='chat-compare-col'><h4>{html_text(label)}</h4>"
        f"<pre>{html_text(text) or '…'}</pre></div>"
        for label, text in ((main_label, main_text), (other_label, other_text)))
    return f"<div class='chat-compare'>{cols}</div>"


def _prompt_for(history, message, tok, model, input_text, max_new):
    try:
        return build_chat_prompt(history, message, tok, model.cfg.context_length, input_text, max_new)
    except ChatError as exc:
        raise gr.Error(str(exc)) from None


def validate_message(message):
    """Checked in the browser before anything is sent (the textbox stays usable)."""
    text = content_text(message)
    if not text.strip():
        return gr.validate(False, "The message is empty: type a question or an instruction.")
    if len(text) > MAX_MESSAGE_CHARS:
        return gr.validate(False, f"The message has {len(text):,} characters; the limit is "
                                  f"{MAX_MESSAGE_CHARS:,}. Ask something shorter.")
    return gr.validate(True, "")


def chat(message, history, model_choice, input_text, compare, temperature, top_k, top_p, max_new_tokens,
         seed, active_name, precision="fp32", request: gr.Request = None):
    """Stream the chosen model's answer; yields (answer, exact prompt, usage, comparison).

    A message that cannot be answered gets a warning and a "Not sent" notice in place of the
    answer, never an exception: ChatInterface keeps its textbox disabled after a failed event,
    and the notice's turn is left out of later prompts."""
    try:
        yield from _chat(message, history, model_choice, input_text, compare, temperature, top_k, top_p,
                         max_new_tokens, seed, active_name, request, precision or "fp32")
    except Exception as exc:  # the UI must never show a traceback or lock up
        reason = exc.message if isinstance(exc, gr.Error) else f"{type(exc).__name__}: {exc}"
        gr.Warning(str(reason))
        yield f"{NOT_SENT}{reason}", "", "", ""


def _chat(message, history, model_choice, input_text, compare, temperature, top_k, top_p, max_new_tokens,
          seed, active_name, request, precision="fp32"):
    message = check_text(content_text(message), "message", max_chars=MAX_MESSAGE_CHARS)
    input_text = check_text(content_text(input_text), "input", max_chars=MAX_MESSAGE_CHARS, allow_empty=True)
    temperature = check_float(temperature, "Temperature", 0.0, 5.0)
    top_k = check_int(top_k, "Top-k", 0, 100_000)
    top_p = check_float(top_p, "Top-p", 0.0, 1.0, lo_open=True)
    max_new = check_int(max_new_tokens, "Max new tokens", 1, MAX_NEW_TOKENS)
    seed = check_int(seed if seed not in (None, "") else 123, "Seed", 0, 2**31 - 1)
    (label, model, tok), other_of = resolve_models(model_choice, active_name, request, precision)
    settings = SamplingSettings(temperature=temperature, top_k=top_k or None,
                                top_p=None if top_p >= 1.0 else top_p, max_new_tokens=max_new)
    if settings.top_k is not None and settings.top_k > tok.n_vocab:
        settings = settings.with_(top_k=tok.n_vocab)
    prompt = _prompt_for(history, message, tok, model, input_text, max_new)
    usage = _usage(prompt, label)
    if prompt.dropped_turns:
        gr.Warning(f"{prompt.dropped_turns} older turn(s) dropped: the conversation outgrew the "
                   f"{prompt.context_length}-token context.")
    answer = ""
    # No torch.inference_mode() around the loop: a generator may resume on another worker
    # thread; stream_generate enters inference mode around each step itself.
    for reply in stream_reply(model, tok, prompt, settings, make_generator(seed)):
        answer = reply.text
        yield answer or "…", prompt.text, usage, compare_html(label, answer, "…", "") if compare else ""
    answer = answer or NO_ANSWER
    if not compare:
        yield answer, prompt.text, usage, ""
        return
    other_label, other_model, other_tok = other_of()
    other_prompt = _prompt_for(history, message, other_tok, other_model, input_text, max_new)
    other = ""
    for reply in stream_reply(other_model, other_tok, other_prompt, settings, make_generator(seed)):
        other = reply.text
        yield answer, prompt.text, usage, compare_html(label, answer, other_label, other)
    yield answer, prompt.text, usage, compare_html(label, answer, other_label, other or NO_ANSWER)


def build(ctx) -> None:
    with gr.Tab("9 · Chat", id="chat", elem_id="tab-chat"):
        gr.Markdown(
            "Talk to the **instruction-tuned** model (chapter 7.2). Every message is wrapped in the book's "
            "Alpaca template (*Below is an instruction… ### Instruction: … ### Response:*); earlier turns go "
            "into the same prompt, oldest dropped first when the model's context (256 tokens for the shipped "
            "one) runs out. Put the text to work on in **Input** (the template's `### Input:` section). The "
            "shipped model is small (5.85M parameters, pre-trained about 6½ hours and instruction-tuned for 57 "
            "minutes on one or two CPU cores): it says what it is, declines questions outside Python's "
            "documentation, answers short how-tos and their follow-ups (\"And in reverse order?\"), recalls "
            "some docstrings and gets 35 % of held-out one-answer documentation "
            "questions (a module, a parameter list) exactly right, but mostly cannot do the string and number "
            "tasks (17 % exact). Tick *compare* to see the untuned base "
            f"ramble on instead. Where `{INSTRUCT_GPT2}` (GPT-2 small tuned on Alpaca-GPT4) is in the local "
            "Hugging Face cache, as on a Space that preloads it, it is the default here and compare mode "
            "sets it beside GPT-2 small.")
        # The conversation first (it is what the tab is for), its settings beside it, below it on a
        # phone. ChatInterface draws the conversation and the message box where it is built, which
        # must be after every component it reads and writes: assets/style.css puts them first.
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=300, elem_id="chat-settings"):
                model_choice = gr.Radio(CHOICES, value=default_choice(), label="Model", elem_id="chat-model",
                                        info=f"GPT-2 (Hub): {INSTRUCT_GPT2}, GPT-2 small tuned on Alpaca-GPT4 "
                                             "with the same Alpaca prompt (124M parameters; needs the Hub or the "
                                             "cache). Shipped: pydoc-gpt tuned on the built-in instructions. Base: "
                                             "the same model before tuning. Yours: what you trained in the "
                                             "Fine-tune tab. Active: the model chosen in the header.")
                compare = gr.Checkbox(False, label="Compare with the base model", elem_id="chat-compare",
                                      info="Also answer each message with the untuned base (GPT-2 small for the "
                                           "Hub's tuned GPT-2; for the base: the tuned model), side by side.")
                with gr.Row():
                    temperature = gr.Slider(0, 2, value=0.0, step=0.05, label="Temperature",
                                            elem_id="chat-temperature",
                                            info="0 = greedy (always the most likely token); higher = more random.")
                    top_k = gr.Slider(0, 200, value=0, step=1, label="Top-k", elem_id="chat-top-k",
                                      info="Keep only the k most likely tokens (0 = all).")
                with gr.Row():
                    top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="Top-p", elem_id="chat-top-p",
                                      info="Keep the smallest set of tokens with this much probability (1 = all).")
                    max_new = gr.Slider(1, MAX_NEW_TOKENS, value=DEFAULT_MAX_NEW_TOKENS, step=1, label="Max new tokens",
                                        elem_id="chat-max-new",
                                        info="Upper bound on the answer; the context may leave fewer.")
                seed = gr.Number(123, precision=0, label="Seed", elem_id="chat-seed",
                                 info="Same seed + settings = same sampled answer.")
                precision = gr.Radio(list(PRECISIONS), value="fp32", label="Precision", elem_id="chat-precision",
                                     info="int8: every linear layer and the output head in 8-bit weights (CPU): "
                                          "faster on GPT-2-sized models, slower on the tiny shipped ones. Your own "
                                          "fine-tuned model stays fp32.")
            with gr.Column(scale=3, min_width=360, elem_id="chat-conversation"):
                # Plain text, not Markdown: a message or an answer with <b> or *stars* is shown as typed.
                chatbot = PlainChatbot(label="Conversation", height=340, elem_id="chat-bot", render_markdown=False)
                textbox = MessageBox(placeholder="Type an instruction, e.g. Reverse the following word.",
                                     elem_id="chat-message", max_length=MAX_MESSAGE_CHARS, lines=1,
                                     submit_btn=True, stop_btn=True, show_label=False)
                input_text = gr.Textbox(label="Input (optional)", lines=1, max_lines=4, elem_id="chat-input",
                                        max_length=MAX_MESSAGE_CHARS,
                                        info="Goes into the template's '### Input:' section for this message only.")
                compare_out = gr.HTML(elem_id="chat-compare-out")
                usage = gr.Markdown(elem_id="chat-usage")
                with gr.Accordion("Exact prompt sent to the model", open=False, elem_id="chat-prompt-acc"):
                    prompt_box = gr.Textbox(label="Prompt", lines=8, max_lines=20, interactive=False,
                                            elem_id="chat-prompt")
                gr.ChatInterface(
                    chat, chatbot=chatbot, textbox=textbox,
                    additional_inputs=[model_choice, input_text, compare, temperature, top_k, top_p, max_new, seed,
                                       ctx.model_name, precision],
                    additional_outputs=[prompt_box, usage, compare_out],
                    api_name="chat", concurrency_limit=1, fill_height=False, autofocus=False,
                    validator=validate_message,
                )
        with gr.Row():
            gr.Examples(GOOD_EXAMPLES, [textbox, input_text], elem_id="chat-examples-good",
                        label="Answered right by the shipped model (greedy)")
            gr.Examples(BAD_EXAMPLES, [textbox, input_text], elem_id="chat-examples-bad",
                        label="Answered wrong: it cannot count, spell or add, and mixes up docstrings it half remembers")
