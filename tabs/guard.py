"""What keeps a public server fair and safe, on the Gradio side: who a visitor is, typed model
names checked against what that visitor may load, raw number inputs checked by the app."""
from __future__ import annotations

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
