"""LLM Explorer: see how a GPT-style language model is built and how it works inside.

    python app.py [--host 127.0.0.1] [--port 7860] [--model NAME_OR_PATH] [--allow-local-models]
    llm-explorer  [the same flags]        (after `pip install .`)

This file only assembles the app: each stage of the book is one module in tabs/.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import gradio as gr

from llm_core.device import device_summary
from llm_core import hosting
from llm_core import runs as saved_runs
from llm_core.registry import DEFAULT_BUILTIN, ModelLoadError, default_model_choice, load_model, model_choices
from tabs import architecture, attention, chat, embeddings, finetune, generate, guard, pretrain, sampler, tokenizer
from tabs.common import AppContext
from tabs.guard import owner_of, typed_model_name
from tabs.markup import html_text, md_text

# One module per stage of the book, in the book's order. Each has build(ctx).
STAGES: list = [tokenizer, sampler, embeddings, attention, architecture, pretrain, generate, finetune, chat]

ASSETS = Path(__file__).resolve().parent / "assets"
# Each handler checks its own upload limit (corpora 2 MB); this one lets a full fine-tune's
# adapter of the shipped model (23.4 MB) be loaded back.
MAX_FILE_SIZE = "32mb"
# Gradio's upload folder: every 10 minutes, files older than an hour go.
DELETE_CACHE = (600, 3600)


def _header(default_model: str, reason: str) -> AppContext:
    # One compact band (title, picker, button, the active model's summary) so that every tab's
    # results start above the fold.
    with gr.Column(elem_id="header"):
        with gr.Row(equal_height=False, elem_id="model-bar"):
            with gr.Column(scale=1, min_width=300):
                gr.Markdown("# LLM Explorer\nEvery stage of building a GPT, from tokens to chat, following "
                            "*Build a Large Language Model (From Scratch)*.", elem_id="title")
            picker = gr.Dropdown(
                choices=model_choices(), value=default_model,
                label="Active model (a name, untrained:<size>, Hub repo id or folder)",
                allow_custom_value=True, scale=2, min_width=300, elem_id="model-picker",
            )
            load_btn = gr.Button("Load model", variant="primary", scale=0, min_width=140, elem_id="model-load")
            # the device on one short line beside the button (the full summary is its tooltip)
            gr.HTML(f'<span title="{html_text(device_summary())}"><b>On:</b> '
                    f'{html_text(device_summary().split(" · fp32")[0])}</span>',
                    elem_id="device-summary", min_width=120)
        summary = gr.Markdown(_summary(default_model, reason), elem_id="model-summary")
    model_name = gr.State(default_model)
    model_changed = gr.Textbox(value=default_model, visible=False, elem_id="model-changed")

    def switch(name, current, request: gr.Request, progress=gr.Progress()):
        if name is None or (isinstance(name, str) and not name.strip()):
            raise gr.Error("Choose a model in the list or type a Hub repo id.")
        choices = model_choices(owner_of(request))
        try:
            name = typed_model_name(name, request)
            bundle = load_model(name, progress=lambda f, msg: progress(f, desc=msg))
        except (ModelLoadError, gr.Error) as exc:
            guard.log.info("refused: %s", " ".join(str(exc).split())[:300])
            gr.Warning(f"{exc} Still using {current}.")
            return current, gr.update(), gr.update(), gr.update(choices=choices, value=current)
        return name, _summary(name, "chosen in the list"), name, gr.update(choices=choices, value=bundle.name)

    load_btn.click(switch, [picker, model_name], [model_name, summary, model_changed, picker],
                   concurrency_id="model-load", api_name="load_model")
    return AppContext(model_name=model_name, model_changed=model_changed, model_picker=picker)


def _summary(name: str, reason: str = "") -> str:
    why = f" — *{reason}*" if reason else ""
    try:
        return f"**Active:** {md_text(load_model(name).summary())}{why}"
    except ModelLoadError as exc:
        return f"**Could not load {md_text(name)}:** {md_text(str(exc))}"


def _own_choices(request: gr.Request):
    return gr.update(choices=model_choices(owner_of(request)))


def build_demo(default_model: str | None = None, reason: str | None = None) -> gr.Blocks:
    """The whole app, opening on ``default_model`` (else GPT-2 small when cached, else pydoc-gpt);
    ``reason`` says in the header why that model is active."""
    if default_model is None:
        default_model, auto_reason = default_model_choice()
        reason = reason or auto_reason
    load_model(default_model)  # fail at start-up, not on the first click
    guard.install()
    saved_runs.remove_stale()  # what a save killed half-way left behind
    with gr.Blocks(title="LLM Explorer", delete_cache=DELETE_CACHE) as demo:
        ctx = _header(default_model, reason or "")
        # Wrapped, not folded into a "⋯" menu: on a phone all nine numbered stages stay in sight.
        with gr.Tabs(elem_id="stages", overflow_behavior="wrap") as tabs:
            ctx.tabs = tabs
            for stage in STAGES:
                stage.build(ctx)
        # the picker lists this visitor's own saved runs (their account's, when signed in)
        demo.load(_own_choices, None, ctx.model_picker, queue=False, api_visibility="private")
    demo.queue(default_concurrency_limit=1, max_size=64)
    guard.limit_in_flight(demo)
    return demo


def launch_kwargs() -> dict:
    css_file = ASSETS / "style.css"
    return dict(
        theme=gr.themes.Soft(),
        css=css_file.read_text() if css_file.is_file() else None,
        ssr_mode=False,
        max_file_size=MAX_FILE_SIZE,
        show_error=True,
    )


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="llm-explorer", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--model", default=None,
                        help="built-in name, untrained:<preset>, gpt2[-medium|-large|-xl], Hub id or directory "
                             "(default: LLM_EXPLORER_MODEL, else GPT-2 small when cached, else pydoc-gpt)")
    parser.add_argument("--allow-local-models", action="store_true",
                        help="let visitors of a public server type folders on this machine (off by default "
                             "when --host is not localhost or LLM_EXPLORER_PUBLIC=1)")
    return parser.parse_args(argv)


def startup_model(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """(model, why) from --model, else LLM_EXPLORER_MODEL; (None, None) picks the automatic default."""
    if args.model:
        return args.model, "chosen with --model"
    if os.environ.get("LLM_EXPLORER_MODEL"):
        return os.environ["LLM_EXPLORER_MODEL"], "chosen with LLM_EXPLORER_MODEL"
    return None, None


def main(argv=None) -> None:
    """``python app.py`` and the ``llm-explorer`` command."""
    args = parse_args(argv)
    hosting.configure(args.host, allow_local_models=args.allow_local_models)
    model, reason = startup_model(args)
    if model and hosting.looks_like_path(model):
        hosting.trust_folder(model)  # the operator's own choice, not a visitor's
    try:
        demo = build_demo(model, reason)
    except ModelLoadError as exc:
        print(f"Could not load {model or default_model_choice()[0]}: {exc}\nStarting on {DEFAULT_BUILTIN} instead.")
        demo = build_demo(DEFAULT_BUILTIN, f"the shipped {DEFAULT_BUILTIN}: {model or 'the default'} did not load")
    demo.launch(server_name=args.host, server_port=args.port, **launch_kwargs())


if __name__ == "__main__":
    main()
