"""Saved runs: each visitor's own checkpoints, and the few the server's operator publishes.

A run a visitor saves lives in ``<LLM_EXPLORER_HOME>/checkpoints/<owner>/<name>``, where the
owner is a hash of the browser session (or of the Hugging Face account when the Space uses
OAuth): its model name is ``saved:<owner>/<name>`` and only that owner may load or overwrite it.
A quota per owner bounds the count and the bytes. Runs for everybody (``published:<name>``) are
made only from the server's shell::

    python -m llm_core.runs list
    python -m llm_core.runs publish saved:s-1a2b3c4d5e6f7a8b/my-run my-run
    python -m llm_core.runs unpublish my-run
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import threading
from pathlib import Path

SAVED, PUBLISHED = "saved:", "published:"
RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")
OWNER = re.compile(r"^[su]-[0-9a-f]{16}$")
NOT_YOURS = "is not one of your saved runs (saved runs belong to the browser session that saved them)"


def runs_dir() -> Path:
    from .registry import USER_DIR  # where the app keeps what users save (LLM_EXPLORER_HOME)
    return USER_DIR


def published_dir() -> Path:
    return runs_dir().parent / "published"


class RunError(ValueError):
    """A run that cannot be saved or loaded (message fit for the UI)."""


def max_runs() -> int:
    return int(os.environ.get("LLM_EXPLORER_RUNS_PER_SESSION", "5"))


def max_run_bytes() -> int:
    return int(float(os.environ.get("LLM_EXPLORER_RUNS_MB_PER_SESSION", "1024")) * 2**20)


def owner_id(session: str | None = None, username: str | None = None) -> str:
    """The namespace of a Hugging Face account (when known) or of a browser session."""
    if username:
        return "u-" + hashlib.sha256(f"user:{username}".encode()).hexdigest()[:16]
    return "s-" + hashlib.sha256(f"session:{session or 'local'}".encode()).hexdigest()[:16]


def check_run_name(name) -> str:
    if not isinstance(name, str) or not RUN_NAME.match(name.strip()):
        shown = repr(name)[:40] if isinstance(name, str) else type(name).__name__
        raise RunError(f"Name the checkpoint with 1–40 letters, digits, '-', '_' or '.', starting with a "
                       f"letter or digit (got {shown}).")
    return name.strip()


def saved_name(owner: str, run: str) -> str:
    return f"{SAVED}{owner}/{run}"


def run_label(model_name: str) -> str:
    """What a picker shows for a saved or published name."""
    if model_name.startswith(SAVED):
        return model_name.rsplit("/", 1)[-1] + " (saved by you)"
    return model_name.removeprefix(PUBLISHED) + " (published)"


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _runs_of(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and (p / "config.json").is_file())


def saved_names(owner: str | None) -> list[str]:
    """The owner's own saved runs (``saved:<owner>/<name>``)."""
    if not owner or not OWNER.match(owner):
        return []
    return [saved_name(owner, p.name) for p in _runs_of(runs_dir() / owner)]


def published_names() -> list[str]:
    return [PUBLISHED + p.name for p in _runs_of(published_dir())]


def resolve(model_name: str) -> Path:
    """The folder of a ``saved:`` or ``published:`` name (ownership is checked by ``check_owner``)."""
    if model_name.startswith(PUBLISHED):
        run = model_name.removeprefix(PUBLISHED)
        if not RUN_NAME.match(run) or not (published_dir() / run / "config.json").is_file():
            raise RunError(f"{model_name} is not a published run")
        return published_dir() / run
    owner, _, run = model_name.removeprefix(SAVED).partition("/")
    if not OWNER.match(owner) or not RUN_NAME.match(run) or not (runs_dir() / owner / run / "config.json").is_file():
        raise RunError(f"{model_name[:80]} {NOT_YOURS}")
    return runs_dir() / owner / run


def check_owner(model_name: str, owner: str | None) -> None:
    """Refuse a ``saved:`` name that belongs to someone else, whether or not it exists."""
    if model_name.startswith(SAVED):
        run_owner = model_name.removeprefix(SAVED).partition("/")[0]
        if owner is None or run_owner != owner:
            raise RunError(f"{model_name[:80]} {NOT_YOURS}")


# ---------------------------------------------------------------- saving

_owner_locks: dict[str, threading.Lock] = {}
_owner_locks_lock = threading.Lock()


def _owner_lock(owner: str) -> threading.Lock:
    with _owner_locks_lock:
        return _owner_locks.setdefault(owner, threading.Lock())


def estimate_bytes(model) -> int:
    return sum(p.numel() * 4 for p in model.parameters())


def save_run(owner: str, run: str, model, tokenizer, meta: dict, overwrite: bool) -> str:
    """Save into the owner's namespace within the quota; returns the model name."""
    from .checkpoint import save_checkpoint

    if not OWNER.match(owner):
        raise RunError("this session has no place to save runs")
    run = check_run_name(run)
    folder = runs_dir() / owner
    with _owner_lock(owner):
        existing = {p.name: p for p in _runs_of(folder)}
        if run in existing and not overwrite:
            raise RunError(f"You already have a run called {run!r}: tick 'overwrite' or choose another name.")
        others = [p for n, p in existing.items() if n != run]
        if len(others) + 1 > max_runs():
            raise RunError(f"You have {len(others)} saved runs, the most one session may keep here "
                           f"({max_runs()}): save over one of them (same name, overwrite ticked).")
        used, new = sum(_dir_bytes(p) for p in others), estimate_bytes(model)
        if used + new > max_run_bytes():
            raise RunError(f"This run needs {new / 2**20:.0f} MB and your saved runs use {used / 2**20:.0f} MB "
                           f"of the {max_run_bytes() / 2**20:.0f} MB one session may keep: overwrite one or "
                           "save a smaller model.")
        try:
            save_checkpoint(folder / run, model, tokenizer, meta=meta)
        finally:
            remove_stale(folder)
    return saved_name(owner, run)


def remove_stale(root: Path | None = None, depth: int = 2) -> list[Path]:
    """Clear what an interrupted save left: hidden ``.NAME.tmp-*`` folders are deleted; a
    ``.NAME.old-*`` folder is the previous checkpoint, put back when NAME itself is missing
    (the save died between its two renames), else deleted. Returns the folders removed."""
    removed = []
    root = runs_dir() if root is None else root
    if not root.is_dir():
        return removed
    for p in sorted(root.iterdir()):
        if not p.name.startswith(".") or not p.is_dir() or p.is_symlink():
            if depth > 1 and p.is_dir() and not p.is_symlink():
                removed += remove_stale(p, depth - 1)
            continue
        if ".old-" in p.name:
            target = p.parent / p.name[1:].rsplit(".old-", 1)[0]
            if not target.exists() and (p / "config.json").is_file():
                os.replace(p, target)
                continue
        if ".tmp-" in p.name or ".old-" in p.name:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def _main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m llm_core.runs", description="Saved and published runs.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="every owner's saved runs and the published ones")
    pub = sub.add_parser("publish", help="copy a saved run (or a checkpoint folder) to published:NAME")
    pub.add_argument("source", help="saved:<owner>/<name> or a checkpoint folder")
    pub.add_argument("name")
    unpub = sub.add_parser("unpublish")
    unpub.add_argument("name")
    args = parser.parse_args(argv)
    if args.cmd == "list":
        for owner in sorted(p for p in runs_dir().iterdir() if OWNER.match(p.name)) if runs_dir().is_dir() else []:
            for run in _runs_of(owner):
                print(f"{saved_name(owner.name, run.name)}\t{_dir_bytes(run) / 2**20:.1f} MB")
        for name in published_names():
            print(name)
    elif args.cmd == "publish":
        from .checkpoint import load_checkpoint, save_checkpoint

        name = check_run_name(args.name)
        src = resolve(args.source) if args.source.startswith(SAVED) else Path(args.source)
        model, tok, meta = load_checkpoint(src)  # checks it loads before anyone can pick it
        save_checkpoint(published_dir() / name, model, tok, meta=meta)
        print(f"published:{name}")
    else:
        shutil.rmtree(published_dir() / check_run_name(args.name))
        print(f"removed published:{args.name}")


if __name__ == "__main__":
    _main()
