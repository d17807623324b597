"""Starting a server in a test: a free port, and waiting until the app answers (no side effects on
import, unlike conftest: benchmarks/bench_load.py uses these through test_hostile)."""
from __future__ import annotations

import socket
import time
import urllib.request


def free_port() -> int:
    """A local TCP port free now (for a server a test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_app(url: str, timeout_s: float, proc=None) -> None:
    """Return once the app at ``url`` answers; raise when time runs out or ``proc`` (its process) exits."""
    deadline = time.time() + timeout_s
    while True:
        try:
            urllib.request.urlopen(url + "gradio_api/info", timeout=5).read()
            return
        except Exception:
            if (proc is not None and proc.poll() is not None) or time.time() > deadline:
                raise
            time.sleep(0.3)
