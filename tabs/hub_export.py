"""The "Export (Hugging Face format)" and "Push to the Hub" controls the Pretrain and Fine-tune tabs share.

A tab passes a function that finds what this session made and writes it into a folder in
Hugging Face's formats; the download is that folder zipped, the push uploads it with
``huggingface_hub``. Exports live in a per-session temporary folder; a new export replaces the
session's previous one.
"""
from __future__ import annotations

import ipaddress
import os
import re
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable

import gradio as gr

from llm_core.export import HubPushError, push_to_hub, zip_folder
from tabs.common import CPU_HEAVY, friendly_errors
from tabs.session_store import session_key
from tabs.markup import html_text, md_text

EXPORT_ROOT = Path(tempfile.gettempdir()) / "llm-explorer-exports"
# (folder name, writer(out_dir) -> written folder); raises gr.Error when the session has nothing.
Finder = Callable[[gr.Request | None], tuple[str, Callable[[Path], Path]]]


def _session_dir(request: gr.Request | None, tab: str) -> Path:
    session = re.sub(r"[^A-Za-z0-9_-]", "", session_key(request))[:32] or "api"
    return EXPORT_ROOT / tab / session


def _prune(tab: str, max_age_s: float = 3600.0) -> None:
    """Drop other sessions' exports older than an hour (a GPT-2 export is ~0.5 GB)."""
    now = time.time()
    for old in (EXPORT_ROOT / tab).glob("*") if (EXPORT_ROOT / tab).is_dir() else ():
        try:
            if now - old.stat().st_mtime > max_age_s:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass


def export_folder(find: Finder, tab: str, request: gr.Request | None) -> Path:
    """Write this session's model/adapter into a fresh folder (the session's older export goes)."""
    name, write = find(request)
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", name)[:60].strip(".-") or "model"
    _prune(tab)
    home = _session_dir(request, tab)
    if home.exists():
        shutil.rmtree(home, ignore_errors=True)
    out = home / uuid.uuid4().hex[:8] / name
    out.parent.mkdir(parents=True, exist_ok=True)
    return write(out)


def export_zip(find: Finder, tab: str, request: gr.Request | None) -> tuple[str, str]:
    folder = export_folder(find, tab, request)
    archive = zip_folder(folder, folder.parent / f"{folder.name}.zip")
    files = ", ".join(sorted(f.name for f in folder.iterdir()))
    return str(archive), f"Exported **{md_text(folder.name)}** ({md_text(files)})."


def _local_visitor(request: gr.Request | None) -> bool:
    """True for someone at this machine (not a Space, loopback client): only they may use the
    server's own HF_TOKEN; a visitor of a hosted app must paste their own token."""
    if os.environ.get("SPACE_ID") or request is None:
        return False
    host = getattr(getattr(request, "client", None), "host", None) or ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def push(find: Finder, tab: str, repo_id: str, token: str, private: bool, request: gr.Request | None) -> str:
    repo_id = (repo_id or "").strip()
    if not repo_id:
        raise gr.Error("Type the Hub repository to push to, as USER/NAME.")
    token = (token or "").strip()
    if not token and _local_visitor(request):
        token = os.environ.get("HF_TOKEN", "").strip()
    if not token:
        raise gr.Error("Paste a Hugging Face token with write access (huggingface.co/settings/tokens); "
                       "it is used for this push only and not stored.")
    folder = export_folder(find, tab, request)
    try:
        url = push_to_hub(folder, repo_id, token=token, private=bool(private))
    except HubPushError as exc:
        gr.Warning(exc.reason)  # the reason alone: the message's folder is a server path
        return f"Not pushed: {md_text(exc.reason)}. The export is kept: use **Export** to download it."
    return f"Pushed to [{md_text(repo_id)}]({html_text(url)})."


def build(find: Finder, tab: str, prefix: str, what: str) -> None:
    """The accordion with both controls; ``prefix`` names the elem_ids (e.g. ``pt``)."""
    with gr.Accordion("Export (Hugging Face format) and push to the Hub", open=False):
        gr.Markdown(f"{what} Opens unchanged in `transformers` / `peft`; see the README's "
                    "*Hugging Face formats* section.")
        with gr.Row():
            export_btn = gr.Button("Export (Hugging Face format)", elem_id=f"{prefix}-export")
            export_file = gr.File(label="Download (zip)", interactive=False, elem_id=f"{prefix}-export-file")
        export_md = gr.Markdown(elem_id=f"{prefix}-export-out")
        with gr.Row():
            repo = gr.Textbox(label="Push to the Hub: repository", placeholder="USER/NAME", max_length=96,
                              elem_id=f"{prefix}-push-repo")
            token = gr.Textbox(label="Hugging Face token (write access; used once, not stored)", type="password",
                               max_length=200, elem_id=f"{prefix}-push-token")
            private = gr.Checkbox(False, label="Private repository", elem_id=f"{prefix}-push-private")
            push_btn = gr.Button("Push to the Hub", elem_id=f"{prefix}-push")
        push_md = gr.Markdown(elem_id=f"{prefix}-push-out")

    @friendly_errors
    def do_export(request: gr.Request = None):
        return export_zip(find, tab, request)

    @friendly_errors
    def do_push(repo_id, tok, priv, request: gr.Request = None):
        return push(find, tab, repo_id, tok, priv, request)

    export_btn.click(do_export, None, [export_file, export_md], api_name=f"{tab}_export_hf",
                     concurrency_id=CPU_HEAVY)
    push_btn.click(do_push, [repo, token, private], push_md, api_name=f"{tab}_push_to_hub",
                   concurrency_id=CPU_HEAVY)
