"""What keeps a public server fair and safe, on the Gradio side: who a visitor is, typed model
names checked against what that visitor may load, raw number inputs checked by the app."""
from __future__ import annotations

import functools
import logging
import math
import os
from pathlib import Path

import gradio as gr

from llm_core import runs
from llm_core.registry import ModelLoadError, check_typed_name


def oauth_username(request: gr.Request | None) -> str | None:
    """The Hugging Face account of a visitor who signed in with gr.LoginButton, if any."""
    if request is None:
        return None
    name = getattr(request, "username", None)
    if name:
        return str(name)
    try:
        info = request.session.get("oauth_info") or {}  # set by Gradio's OAuth routes
    except (AttributeError, AssertionError, RuntimeError, KeyError):
        return None
    user = (info.get("userinfo") or {}).get("preferred_username")
    return str(user) if user else None


def owner_of(request: gr.Request | None) -> str:
    """The namespace of this visitor's saved runs (their account, else their browser session)."""
    return runs.owner_id(getattr(request, "session_hash", None), oauth_username(request))


def typed_model_name(name, request: gr.Request | None, what: str = "Model") -> str:
    """A model name a visitor chose or typed: clean, and theirs to load (else a gr.Error)."""
    try:
        return check_typed_name(name, owner_of(request))
    except ModelLoadError as exc:
        raise gr.Error(str(exc), title=f"{what} unavailable") from None


# ---------------------------------------------------------------- numbers arrive raw

def _raw_when_not_a_number(preprocess):
    """Gradio's Number/Slider preprocess fails on NaN, ±inf or text with a generic message: pass
    such values through unchanged so the handler's own check (check_int / check_float) says what
    is wrong and what to type instead."""
    @functools.wraps(preprocess)
    def wrapper(self, payload):
        if (payload is None or isinstance(payload, bool) or not isinstance(payload, (int, float))
                or not math.isfinite(payload)):
            return payload
        return preprocess(self, payload)
    wrapper.llm_explorer_raw = True
    return wrapper


# ---------------------------------------------------------------- intended errors are one log line

log = logging.getLogger("llm_explorer")


def _quiet_error_init(init):
    """gr.Error is how the app answers bad input: log it as one line, not a traceback (real
    failures still print theirs: friendly_errors logs them before turning them into a message)."""
    @functools.wraps(init)
    def wrapper(self, message="Error raised.", *args, print_exception: bool = False, **kwargs):
        init(self, message, *args, print_exception=print_exception, **kwargs)
        if not print_exception:
            log.info("refused: %s", " ".join(str(message).split())[:300])
    wrapper.llm_explorer_quiet = True
    return wrapper


def _none_as_empty(preprocess):
    """A CheckboxGroup sent None (no selection) means [], not a preprocessing error."""
    @functools.wraps(preprocess)
    def wrapper(self, payload):
        return preprocess(self, [] if payload is None else payload)
    wrapper.llm_explorer_raw = True
    return wrapper


class _RefusalsOnOneLine:
    """Stands in for the ``traceback`` module inside Gradio's queue and routes: a request that
    Gradio itself refuses (a file path outside its folders, a payload its data model rejects) is
    logged as one line like the app's own refusals; any other exception keeps its traceback."""

    def __init__(self, real):
        self._real = real

    def __getattr__(self, name):
        return getattr(self._real, name)

    def print_exc(self, *args, **kwargs):
        import sys

        from gradio.exceptions import Error, InvalidPathError
        from pydantic import ValidationError

        exc = sys.exc_info()[1]
        if isinstance(exc, (Error, InvalidPathError, ValidationError)):
            first = " ".join(str(exc).split())[:300]
            log.info("refused: %s: %s", type(exc).__name__, first)
            return None
        return self._real.print_exc(*args, **kwargs)


def install() -> None:
    """Install the patches above (idempotent)."""
    import traceback

    from gradio import queueing, routes, utils
    for module in (queueing, routes, utils):
        if isinstance(getattr(module, "traceback", None), type(traceback)):
            module.traceback = _RefusalsOnOneLine(traceback)
    for cls in (gr.Number, gr.Slider):
        if not getattr(cls.preprocess, "llm_explorer_raw", False):
            cls.preprocess = _raw_when_not_a_number(cls.preprocess)
    if not getattr(gr.CheckboxGroup.preprocess, "llm_explorer_raw", False):
        gr.CheckboxGroup.preprocess = _none_as_empty(gr.CheckboxGroup.preprocess)
    if not getattr(gr.Error.__init__, "llm_explorer_quiet", False):
        gr.Error.__init__ = _quiet_error_init(gr.Error.__init__)
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


# ---------------------------------------------------------------- fair use of the queue

def max_in_flight() -> int:
    return int(os.environ.get("LLM_EXPLORER_MAX_IN_FLIGHT", "8"))


def max_in_flight_per_address() -> int:
    return int(os.environ.get("LLM_EXPLORER_MAX_IN_FLIGHT_PER_ADDRESS", "32"))


def client_address(request) -> str:
    """The visitor's address: the last hop a proxy added (Spaces' own) when there is one."""
    forwarded = request.headers.get("x-forwarded-for") if request is not None else None
    if forwarded:
        return forwarded.split(",")[-1].strip()
    client = getattr(request, "client", None)
    return getattr(client, "host", "") or ""


def limit_in_flight(demo: gr.Blocks) -> None:
    """Refuse a session's request while it already has ``max_in_flight()`` waiting or running, so
    one client cannot fill the queue for everyone (Gradio's queue has no per-session limit).
    Requests without a session (``/gradio_api/call/...`` scripts get a fresh one each) are
    counted per address, with a higher limit since many visitors may share one."""
    queue = demo._queue
    push = queue.push

    def in_flight():
        for q in queue.event_queue_per_concurrency_id.values():
            yield from q.queue
        for job in queue.active_jobs:
            yield from job or ()

    async def push_limited(body, request, username):
        session = getattr(body, "session_hash", None)
        events = list(in_flight())
        if session:
            mine = sum(1 for ev in events if ev.session_hash == session)
            limit, who = max_in_flight(), "visitor"
        else:
            address = client_address(request)
            mine = sum(1 for ev in events if client_address(ev.request) == address)
            limit, who = max_in_flight_per_address(), "address"
        if mine >= limit:
            log.info("refused: %s has %d requests in flight", who, mine)
            return (False, f"You have {mine} requests waiting or running; the limit per {who} is {limit}. "
                           "Wait for them to finish.", "queue_full")
        return await push(body, request, username)

    queue.push = push_limited


# ---------------------------------------------------------------- uploads the app refused

def _upload_root() -> Path:
    from gradio.utils import get_upload_folder
    return Path(get_upload_folder()).resolve()


def discard(path) -> None:
    """Delete an uploaded file the app refused (only inside Gradio's upload folder)."""
    if isinstance(path, dict):
        path = path.get("path")
    path = getattr(path, "path", path)
    if not isinstance(path, (str, os.PathLike)):
        return
    try:
        p = Path(path).resolve()
        if _upload_root() in p.parents and p.is_file():
            p.unlink()
    except OSError:
        pass
