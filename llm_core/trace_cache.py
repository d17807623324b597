"""Recently traced prompts, so that changing a layer, head or statistic redraws instead of re-running.

One cache per process, least recently used first out, bounded by entries and by the
bytes of the tensors it holds. The key is (model name, the model object, token ids):
the model object is held by a weak reference and compared by identity, so a model
that was reloaded, retrained or evicted never serves an old trace.
"""
from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict
from typing import Any, Callable

import torch

MAX_ENTRIES = 16
MAX_BYTES = int(float(os.environ.get("LLM_EXPLORER_TRACE_CACHE_MB", "512")) * 2**20)


def nbytes(value: Any) -> int:
    """Bytes of the tensors in a value (a tensor, a dict/list of them, or an object with a __dict__)."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(nbytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(nbytes(v) for v in value)
    if hasattr(value, "__dict__"):
        return sum(nbytes(v) for v in vars(value).values())
    return 0


class TraceCache:
    def __init__(self, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_BYTES):
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._items: OrderedDict[tuple, tuple[weakref.ref, Any, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get_or_compute(self, name: str, model: torch.nn.Module, ids, kind: str, compute: Callable[[], Any]):
        """The cached value for (kind, model, ids), computing and storing it on a miss."""
        key = (kind, name, id(model), tuple(int(i) for i in ids))
        with self._lock:
            hit = self._items.get(key)
            if hit is not None and hit[0]() is model:
                self._items.move_to_end(key)
                self.hits += 1
                return hit[1]
            if hit is not None:  # same address, another model: stale
                del self._items[key]
            self.misses += 1
        value = compute()
        size = nbytes(value)
        if size > self.max_bytes:
            return value  # too big to keep; still the right answer
        with self._lock:
            self._items[key] = (weakref.ref(model), value, size)
            self._items.move_to_end(key)
            self._evict()
        return value

    def _evict(self) -> None:
        total = sum(size for _, _, size in self._items.values())
        while self._items and (len(self._items) > self.max_entries or total > self.max_bytes):
            _, (_, _, size) = self._items.popitem(last=False)
            total -= size

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def bytes(self) -> int:
        with self._lock:
            return sum(size for _, _, size in self._items.values())


TRACES = TraceCache()
