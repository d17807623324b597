"""What every tab shares: the session's active model, limits, and error handling."""
from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass, field

import gradio as gr

from llm_core import corpus
from llm_core.registry import ModelBundle, ModelLoadError, load_model
from tabs.guard import discard
from tabs.markup import html_text
from tabs.session_store import SESSIONS

_log = logging.getLogger("llm_explorer")

# One queue for events that keep the CPU busy (forward passes, training): on 2 vCPUs
# running two at once only makes both slow.
CPU_HEAVY = "cpu-heavy"

# Server-side limits (browsers can ignore max_length; these cannot be ignored).
MAX_TEXT_CHARS = 200_000      # pasted text
MAX_UPLOAD_BYTES = 2_000_000  # uploaded corpora

# One training run (pre-training or fine-tuning) at a time on this server: a second one
# would halve the speed of both on 2 vCPUs. Acquire with blocking=False and tell the user.
TRAINING_SLOT = threading.Lock()


def share_link_js(args: str, params: str) -> str:
    """The js of a "copy link" button: a function of ``args`` (the inputs' values) whose ``params``
    fill ``p`` (URLSearchParams); it copies this page's address with them and returns it."""
    return (f"({args}) => {{\n  const p = new URLSearchParams();\n{params}\n"
            "  const url = window.location.origin + window.location.pathname + '?' + p.toString();\n"
            "  try { navigator.clipboard.writeText(url); } catch (e) {}\n  return url;\n}")


def share_link_row(prefix: str, info: str) -> tuple[gr.Button, gr.Textbox]:
    """The button that copies a link to this view and the box showing it (``#{prefix}-share``)."""
    with gr.Row(equal_height=True):
        button = gr.Button("Copy link to this view", scale=1, elem_id=f"{prefix}-share")
        link = gr.Textbox(label="Link", scale=4, elem_id=f"{prefix}-share-url", interactive=False, info=info)
    return button, link


def begin_training(session: str, kind: str) -> threading.Event:
    """Claim the server's training slot for this session's ``kind`` run ("pretrain" or "finetune");
    returns the run's stop request. Every claim is given back by ``end_training``."""
    stop = threading.Event()
    if not SESSIONS.begin(session, kind, stop):
        raise gr.Error("A training run of yours (pre-training or fine-tuning) is already going: stop it or wait "
                       "for it to finish.")
    if not TRAINING_SLOT.acquire(blocking=False):
        SESSIONS.end(session)
        raise gr.Error("Another training run is in progress on this server (pre-training or fine-tuning, yours "
                       "or another visitor's). Wait for it to finish, then start again.")
    return stop


def end_training(session: str) -> None:
    TRAINING_SLOT.release()
    SESSIONS.end(session)


@dataclass
class AppContext:
    """Components created by app.py that tabs read from or listen to."""

    model_name: gr.State          # this session's active model name (a string, cheap to copy)
    model_changed: gr.Textbox     # hidden; its .change fires after the header loads a model
    model_picker: gr.Dropdown | None = None  # the header picker: update its choices after saving a model
    tabs: gr.Tabs | None = None   # the stages; an event may return gr.Tabs(selected=<tab id>) to switch
    # Components a tab offers to later tabs (built in STAGES order): {"attention": {"prompt": …}, …}
    shared: dict = field(default_factory=dict)


def get_bundle(name: str | None) -> ModelBundle:
    """The shared model for ``name``; a clear UI error when it cannot be had."""
    try:
        return load_model(name)
    except ModelLoadError as exc:
        raise gr.Error(f"{exc}", title="Model unavailable") from None


def check_text(text: str | None, what: str = "text", max_chars: int = MAX_TEXT_CHARS,
               allow_empty: bool = False) -> str:
    """Server-side validation of a text input."""
    text = "" if text is None else text
    if not isinstance(text, str):
        raise gr.Error(f"The {what} must be text (got {type(text).__name__}).")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise gr.Error(f"The {what} contains an invalid character at position {exc.start:,} (a lone "
                       f"surrogate U+{ord(text[exc.start]):04X}, not Unicode text): remove it and try again.") from None
    if not allow_empty and not text.strip():
        raise gr.Error(f"The {what} is empty: type or paste some text first.")
    if len(text) > max_chars:
        raise gr.Error(f"The {what} has {len(text):,} characters; the limit is {max_chars:,}. "
                       "Use a shorter piece.")
    return text


def upload_path(upload) -> str | None:
    """The server path of a gr.File value (a path string, a FileData, or its dict form)."""
    if upload is None or isinstance(upload, str):
        return upload or None
    return getattr(upload, "path", None) or (upload.get("path") if isinstance(upload, dict) else None)


def read_text_upload(upload) -> str:
    """The text of an uploaded .txt file (``corpus.load_text_upload``: size-limited, UTF-8, not binary,
    not empty). A refused file is deleted from the upload folder at once."""
    path = upload_path(upload)
    if not path:
        raise gr.Error("No file uploaded yet: choose a UTF-8 .txt file (or switch the source).")
    try:
        return corpus.load_text_upload(path, max_bytes=MAX_UPLOAD_BYTES)
    except corpus.CorpusError as exc:
        discard(path)
        raise gr.Error(f"Cannot use this file: {exc}.", title="Upload refused") from None


def check_int(value, name: str, lo: int, hi: int) -> int:
    try:
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        v = int(value)
    except (TypeError, ValueError, OverflowError):
        raise gr.Error(f"{name} must be a whole number (got {_shown(value)}).") from None
    if not lo <= v <= hi:
        raise gr.Error(f"{name} must be between {lo:,} and {hi:,} (got {v:,}).")
    return v


def check_choice(value, allowed, name: str):
    """``value`` when it is one of ``allowed`` (a request can carry anything, whatever the picker offers)."""
    if value not in allowed:
        raise gr.Error(f"{name} must be one of {', '.join(map(str, allowed))} (got {_shown(value)}).")
    return value


def _shown(value) -> str:
    text = repr(value)
    return html_text(text if len(text) <= 40 else text[:37] + "...")


def check_float(value, name: str, lo: float, hi: float, lo_open: bool = False) -> float:
    try:
        if isinstance(value, bool):
            raise TypeError(value)
        v = float(value)
    except (TypeError, ValueError, OverflowError):
        raise gr.Error(f"{name} must be a number (got {_shown(value)}).") from None
    if v != v or v > hi or v < lo or (lo_open and v == lo):
        bound = f"greater than {lo}" if lo_open else f"at least {lo}"
        raise gr.Error(f"{name} must be {bound} and at most {hi} (got {_shown(value)}).")
    return v


def friendly_errors(fn):
    """Turn unexpected exceptions into a UI error instead of a dead event.

    gr.Error passes through; anything else is reported with its message.
    Works for plain functions and generators (streaming handlers).
    """
    import inspect

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except gr.Error:
                raise
            except Exception as exc:  # the UI must never show a traceback; the log keeps it
                _log.exception("unexpected error in %s", fn.__name__)
                raise gr.Error(f"{type(exc).__name__}: {exc}") from exc
        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as exc:
            _log.exception("unexpected error in %s", fn.__name__)
            raise gr.Error(f"{type(exc).__name__}: {exc}") from exc
    return wrapper


# ---------------------------------------------------------------- share links

def link_params(request: gr.Request | None, tab: str) -> dict | None:
    """This tab's parameters from the page's URL (?tab=attention&text=…), or None for another tab."""
    params = dict(request.query_params) if request is not None else {}
    if params.get("tab") != tab:
        return None
    return params


def link_int(params: dict, name: str, lo: int, hi: int):
    """A whole number from a link's parameters within lo..hi; else no change (with a warning when it is bad)."""
    value = params.get(name)
    if value is None:
        return gr.update()
    try:
        v = int(value)
    except ValueError:
        gr.Warning(f"The link's {name}={value!r} is not a whole number; ignored it.")
        return gr.update()
    if not lo <= v <= hi:
        gr.Warning(f"The link's {name}={v} is outside {lo}..{hi} for this model; ignored it.")
        return gr.update()
    return v
