"""Each visitor's work between clicks: one store for every tab, with one expiry rule.

An entry holds what a session made (Pretrain's last trained model, Fine-tune's result and its
earlier curves), whether one of its runs is going, and that run's stop request. Entries hold
models, so the store is small (``max_sessions``) and forgets a session idle for ``ttl_s``
seconds unless a run of it is going.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict


def session_key(request) -> str:
    """The key a browser session's work is kept under ("api" for a client without one)."""
    return getattr(request, "session_hash", None) or "api"


class SessionStore:
    def __init__(self, ttl_s: float = 3600.0, max_sessions: int = 6, max_runs: int = 5):
        self.ttl_s, self.max_sessions, self.max_runs = ttl_s, max_sessions, max_runs
        self._lock = threading.Lock()
        self._data: "OrderedDict[str, dict]" = OrderedDict()

    def _entry(self, key: str) -> dict:
        self._expire()
        entry = self._data.get(key)
        if entry is None:
            entry = self._data[key] = {"result": None, "runs": [], "trained": None, "running": None,
                                       "stop": None, "touched": time.time()}
            while len(self._data) > self.max_sessions:
                oldest = next(k for k in self._data if not self._data[k]["running"] or k == key)
                if oldest == key:
                    break
                del self._data[oldest]
        entry["touched"] = time.time()
        self._data.move_to_end(key)
        return entry

    def _expire(self) -> None:
        now = time.time()
        for k in [k for k, v in self._data.items() if not v["running"] and now - v["touched"] > self.ttl_s]:
            del self._data[k]

    # Fine-tune: the latest result and the curves of earlier runs
    def result(self, key: str):
        with self._lock:
            return self._entry(key)["result"]

    def set_result(self, key: str, result) -> None:
        with self._lock:
            self._entry(key)["result"] = result

    def runs(self, key: str) -> list[dict]:
        with self._lock:
            return list(self._entry(key)["runs"])

    def add_run(self, key: str, run: dict) -> None:
        with self._lock:
            runs = self._entry(key)["runs"]
            runs.append(run)
            del runs[:-self.max_runs]

    def clear_runs(self, key: str) -> None:
        with self._lock:
            self._entry(key)["runs"] = []

    # Pretrain: the model trained last, until it is saved or the entry expires
    def trained(self, key: str) -> dict | None:
        with self._lock:
            return self._entry(key)["trained"]

    def set_trained(self, key: str, trained: dict) -> None:
        with self._lock:
            self._entry(key)["trained"] = trained

    # A session's running run ("pretrain" or "finetune") and its stop request
    def begin(self, key: str, kind: str, stop: threading.Event | None = None) -> bool:
        """Mark a ``kind`` run as going for this session; False if one of its runs already is."""
        with self._lock:
            entry = self._entry(key)
            if entry["running"]:
                return False
            entry["running"], entry["stop"] = kind, stop
            return True

    def end(self, key: str) -> None:
        with self._lock:
            entry = self._entry(key)
            entry["running"], entry["stop"] = None, None

    def stop_request(self, key: str, kind: str) -> threading.Event | None:
        """The stop request of this session's running ``kind`` run (None when none is going)."""
        with self._lock:
            entry = self._entry(key)
            return entry["stop"] if entry["running"] == kind else None

SESSIONS = SessionStore()
