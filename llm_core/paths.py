"""Where the app keeps what it writes (saved checkpoints, cached corpora)."""
from __future__ import annotations

import os
from pathlib import Path

# A Hugging Face Space's persistent storage, mounted when the Space has it turned on.
SPACE_DATA = Path("/data")


def explorer_home() -> Path:
    """``LLM_EXPLORER_HOME`` when set; else ``/data/llm-explorer`` when ``/data`` is writable
    (so a Space keeps saved runs across restarts); else ``~/.cache/llm-explorer``."""
    env = os.environ.get("LLM_EXPLORER_HOME")
    if env:
        return Path(env).expanduser()
    if SPACE_DATA.is_dir() and os.access(SPACE_DATA, os.W_OK | os.X_OK):
        return SPACE_DATA / "llm-explorer"
    return Path.home() / ".cache" / "llm-explorer"
