"""Load on the app as a public Space sees it: many visitors at once, and one who floods.

    .venv/bin/python benchmarks/bench_load.py [--clients 20] [--seconds 60] [--flood-seconds 20]

1. **Load.** The app is started as its own process on 127.0.0.1 (public mode, the shipped
   models). ``--clients`` visitors, each with its own ``gradio_client`` session, call
   tokenize / sample_windows / attention / generate / chat in turn for ``--seconds``; printed:
   calls, errors, p50 and p95 latency per endpoint, and the server's peak memory (RSS of its
   process, sampled every 0.2 s).
2. **Flood.** One visitor submits 48 /generate calls (64 tokens each) at once, again and again, while a second
   visitor calls /generate (the same queue: CPU-heavy events share one) one call at a time; the second visitor's p50/p95 are printed, with
   the per-session limit (LLM_EXPLORER_MAX_IN_FLIGHT=8, the default) and without it (a limit of
   1000, a fresh server), and their ratio.

Measured (2026-12-01, the project's 2-core machine shared with other jobs, ``--clients 20
--seconds 60 --flood-seconds 20``; the clients run on the same 2 cores as the server):

    endpoint          calls errors    p50 s    p95 s
    /tokenize           178      0     0.20     0.50
    /sample_windows     181      0     0.21     0.50
    /attention          185      0     2.88     3.44
    /generate           183      0     2.71     3.37
    /chat               174      0     0.26     0.50
    server peak memory: 723 MB

    flood, second visitor on /generate:  with the limit p50 2.18 s, p95 3.72 s (358 of 432 flood
    calls refused); without it p50 3.97 s, p95 4.71 s (0 of 192 refused): p95 1.3x, p50 1.8x better.

/attention and /generate share one CPU-heavy queue (concurrency 1), so 20 visitors wait in
line there; the other endpoints have their own queues. Under the flood the limit keeps the
second visitor behind at most 8 of the flooder's calls instead of 48, but the refused bursts
still cost CPU on 2 cores, which is why p95 gains less than p50.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.api.test_hostile import start_server  # noqa: E402

TEXT = "Every effort moves you toward the sunlit terraces of the hills. " * 4
CALLS = {  # endpoint: arguments (cheap settings: the point is the queue, not the model)
    "/tokenize": [TEXT, "gpt2", "none", "allow", "typed", "other", TEXT],
    "/sample_windows": ["Type or paste", TEXT, None, None, "GPT-2 BPE (tiktoken gpt2)", 8, 4, 4, False, 123, True,
                        0, 0],
    "/attention": ["The cat sat on the mat because it was tired.", 0, 0, -1, "previous token", 6, 123],
    "/generate": ["The for statement is used to", 0.8, 50, 0.95, 16, 123, True, True],
    "/chat": ["Reverse the following word.", "shipped instruct model", "python", False, 0.0, 0, 1.0, 16, 123],
}

FLOOD_CALL = ["Every effort moves you", 0.8, 50, 0.95, 64, 1, False, True]  # 64 tokens each


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


class PeakMemory(threading.Thread):
    def __init__(self, pid: int):
        super().__init__(daemon=True)
        import psutil
        self.proc, self.peak, self.stop = psutil.Process(pid), 0, threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                rss = self.proc.memory_info().rss + sum(c.memory_info().rss for c in self.proc.children(True))
                self.peak = max(self.peak, rss)
            except Exception:
                pass
            time.sleep(0.2)


def visitor(url: str, deadline: float, times: dict, errors: dict, lock: threading.Lock, offset: int):
    from gradio_client import Client

    c = Client(url, verbose=False)
    names = list(CALLS)
    i = offset
    while time.time() < deadline:
        name = names[i % len(names)]
        i += 1
        t0 = time.perf_counter()
        try:
            c.predict(*CALLS[name], api_name=name)
            with lock:
                times[name].append(time.perf_counter() - t0)
        except Exception as exc:
            with lock:
                errors[name].append(type(exc).__name__)


def run_load(url: str, pid: int, clients: int, seconds: float) -> None:
    times = {n: [] for n in CALLS}
    errors = {n: [] for n in CALLS}
    lock = threading.Lock()
    mem = PeakMemory(pid)
    mem.start()
    deadline = time.time() + seconds
    threads = [threading.Thread(target=visitor, args=(url, deadline, times, errors, lock, k)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    mem.stop.set()
    print(f"\nLoad: {clients} visitors for {seconds:.0f} s")
    print(f"{'endpoint':<16} {'calls':>6} {'errors':>6} {'p50 s':>8} {'p95 s':>8}")
    for n in CALLS:
        print(f"{n:<16} {len(times[n]):>6} {len(errors[n]):>6} {pct(times[n], .5):>8.2f} {pct(times[n], .95):>8.2f}"
              + (f"   {sorted(set(errors[n]))}" if errors[n] else ""))
    print(f"server peak memory: {mem.peak / 2**20:,.0f} MB")


def run_flood(url: str, seconds: float) -> tuple[float, float, int, int]:
    """(second visitor's p50, p95, calls refused to the flooder, flood calls submitted)."""
    from gradio_client import Client

    stop = threading.Event()
    refused, submitted = [0], [0]

    def flooder():
        c = Client(url, verbose=False, max_workers=48)
        while not stop.is_set():
            jobs = [c.submit(*FLOOD_CALL, api_name="/generate") for _ in range(48)]
            submitted[0] += len(jobs)
            for job in jobs:
                try:
                    job.result(timeout=600)
                except Exception:
                    refused[0] += 1

    t = threading.Thread(target=flooder, daemon=True)
    t.start()
    time.sleep(2)  # let the flood fill the queue
    c = Client(url, verbose=False)
    lat = []
    deadline = time.time() + seconds
    while time.time() < deadline:
        t0 = time.perf_counter()
        c.predict(*CALLS["/generate"], api_name="/generate")
        lat.append(time.perf_counter() - t0)
    stop.set()
    t.join(timeout=600)
    return pct(lat, .5), pct(lat, .95), refused[0], submitted[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--flood-seconds", type=float, default=20)
    args = ap.parse_args()
    results = {}
    for label, limit in (("with the per-session limit (8)", None), ("without it (1000)", "1000")):
        home = Path(tempfile.mkdtemp(prefix="bench-load-"))
        extra = {"LLM_EXPLORER_MAX_IN_FLIGHT": limit} if limit else {}
        proc, url = start_server(home, home / "server.log", extra_env=extra)
        try:
            if limit is None:
                run_load(url, proc.pid, args.clients, args.seconds)
            results[label] = run_flood(url, args.flood_seconds)
        finally:
            proc.terminate()
            proc.wait(60)
    print(f"\nFlood: one visitor submits 48 /generate at a time for {args.flood_seconds:.0f} s; "
          "another calls /generate")
    for label, (p50, p95, refused, submitted) in results.items():
        print(f"  {label:<32} second visitor p50 {p50:6.2f} s  p95 {p95:6.2f} s   "
              f"flood calls refused {refused}/{submitted}")
    (_, with_p95, *_), (_, without_p95, *_) = results.values()
    print(f"  p95 without / with the limit: {without_p95 / with_p95:.1f}x")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
