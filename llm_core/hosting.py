"""What a server open to strangers allows: which model names may be typed, and where from.

A server is public when ``LLM_EXPLORER_PUBLIC=1`` (set it on Spaces) or when app.py binds to
anything but localhost. A public server refuses typed folders with one message that does not
depend on whether the folder exists; ``--allow-local-models`` (``LLM_EXPLORER_ALLOW_LOCAL_MODELS=1``)
allows them all, ``LLM_EXPLORER_MODEL_DIRS`` (folders separated by ``os.pathsep``) allows those
under the folders named.

A public server also downloads only the Hub repos it was told about: the GPT-2 family, the
instruction-tuned GPT-2 and those in ``LLM_EXPLORER_HUB_MODELS`` (comma-separated; ``*`` allows
any). Repos already in the local cache load either way: they cost no download and no disk.
"""
from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path

MAX_NAME_CHARS = 300
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
LOCAL_REFUSED = ("Typed folders are not available on this server: choose a model from the list "
                 "(or a Hugging Face Hub repo id such as openai-community/gpt2).")
_LOCALHOSTS = {"127.0.0.1", "localhost", "::1", ""}

_bound_host: str | None = None
_allow_local_flag = False
_trusted: list[Path] = []  # folders the operator named on the command line


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def configure(host: str | None = None, allow_local_models: bool = False) -> None:
    """Called by app.py with the host it binds to and its --allow-local-models flag."""
    global _bound_host, _allow_local_flag
    _bound_host = host
    _allow_local_flag = allow_local_models


def is_public() -> bool:
    if _truthy(os.environ.get("LLM_EXPLORER_PUBLIC")):
        return True
    return _bound_host is not None and _bound_host.strip().lower() not in _LOCALHOSTS


def trust_folder(path: str | os.PathLike) -> None:
    """Allow one folder the operator chose (``--model DIR``) on a public server."""
    _trusted.append(Path(path).expanduser().resolve())


def model_dirs() -> list[Path]:
    return [Path(p).expanduser().resolve() for p in os.environ.get("LLM_EXPLORER_MODEL_DIRS", "").split(os.pathsep)
            if p.strip()] + _trusted


def local_models_allowed() -> bool:
    """Whether any typed folder may be opened (a private server, or the operator said so)."""
    return not is_public() or _allow_local_flag or _truthy(os.environ.get("LLM_EXPLORER_ALLOW_LOCAL_MODELS"))


def hub_repo_allowed(repo_id: str, known: set[str]) -> bool:
    """Whether a public server may download ``repo_id`` (a private one downloads anything)."""
    if not is_public():
        return True
    extra = {r.strip() for r in os.environ.get("LLM_EXPLORER_HUB_MODELS", "").split(",") if r.strip()}
    return "*" in extra or repo_id in known or repo_id in extra


def hub_refused(repo_id: str) -> str:
    return (f"This server does not download {repo_id[:100]}: it offers the GPT-2 family and the models "
            "in its list (the operator can allow more with LLM_EXPLORER_HUB_MODELS).")


def clean_name(name, what: str = "model name") -> str:
    """A model name from a stranger: a short printable string, or a message saying what is wrong."""
    if not isinstance(name, str):
        raise ValueError(f"the {what} must be text (got {type(name).__name__})")
    name = name.strip()
    if not name:
        raise ValueError(f"the {what} is empty: choose a model in the list")
    if len(name) > MAX_NAME_CHARS:
        raise ValueError(f"the {what} has {len(name):,} characters; names are at most {MAX_NAME_CHARS}")
    if any(unicodedata.category(ch) in ("Cc", "Cs", "Co", "Cn") for ch in name):
        raise ValueError(f"the {what} contains control or invalid characters")
    return name


def looks_like_path(name: str) -> bool:
    """A folder rather than a built-in name or a Hub repo id (``owner/name``)."""
    return name.startswith(("/", "~", ".", "\\")) or "\\" in name or ("/" in name and not HUB_ID.match(name))


def local_folder(name: str) -> Path | None:
    """The folder a typed name means, if typed folders are allowed for it; else None.

    On a public server, ``None`` for every folder outside LLM_EXPLORER_MODEL_DIRS, without
    looking at the file system, so the answer cannot reveal what exists.
    """
    if local_models_allowed():
        try:
            p = Path(name).expanduser()
            return p if p.is_dir() else None
        except (OSError, ValueError):
            return None
    roots = model_dirs()
    if not roots:
        return None
    try:
        p = Path(name).expanduser().resolve()
    except (OSError, ValueError, RuntimeError):
        return None
    if any(p == r or r in p.parents for r in roots) and p.is_dir():
        return p
    return None
