"""Start-up: ``python app.py`` until it answers, vs a bare ``python -c "import gradio, torch"``.

    .venv/bin/python benchmarks/bench_startup.py [--repeats 3]

The app is timed from process start to the first successful ``GET /gradio_api/info`` (the
page can be served); the bare import from process start to exit. Both wall time and the
process's CPU time are printed: on a shared machine wall time swings with the load, CPU time
much less. Fresh processes, run
interleaved, medians; the ratio is what the target (<= 1.5x) is about: what the app itself
adds on top of the two libraries it cannot start without. ``--importtime`` also prints the
app's slowest imports (``python -X importtime -c "import app"``), which is how the lazy
imports were chosen.

Measured (2026-12-01, the project's 2-core machine, ``--repeats 3``, a quiet moment):

- before (every tab drew its first view at start-up): bare 2.77 s, app 5.59 s wall, **2.02x**
  (CPU 2.76 vs 5.53 s, 2.01x). Per tab at start-up: Tokenizer 0.5 s (GPT-2's BPE: the first
  page needs it), Attention 0.8 s and Architecture 0.9 s (a traced forward pass each),
  Embeddings ~2 s under load (PCA, neighbours, positions), Fine-tune ~0.6 s (the first
  parameter count warms up torch's meta device); importing the app itself 0.13 s
  (``transformers`` and ``peft`` are not in its import graph);
- after (Embeddings, Attention, Architecture and the Fine-tune counts are drawn when their
  tab is first opened, ``tabs/lazy.py``): bare 2.81 s, app 4.23 s wall, **1.51x** (CPU 2.80 vs
  4.04 s, **1.44x**). Target 1.5x: met on CPU time, on the line in wall time.

Re-measured 2026-12-02 (``--repeats 3 --importtime``, one core busy with a training run): bare
2.84 s, app 4.19 s wall, **1.48x** (CPU 2.92 vs 4.25 s, **1.45x**): target met both ways. Of
``import app``'s 2.93 s, gradio takes 1.81 s and torch 0.82 s (both in the bare import too);
nothing else the first page does not need shows among the slowest imports, so nothing was
made lazier this time.
"""
from __future__ import annotations

import argparse
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict:
    e = dict(os.environ)
    e.setdefault("LLM_EXPLORER_HOME", tempfile.mkdtemp(prefix="bench-startup-"))
    e.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    e.setdefault("HF_HUB_OFFLINE", "1")
    return e


def time_bare() -> tuple[float, float]:
    """(wall seconds, CPU seconds) of the bare import."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import gradio, torch"], check=True, env=env(), cwd=ROOT)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def time_app(timeout: float = 180.0) -> tuple[float, float]:
    """(wall seconds, CPU seconds) until the app answers."""
    port = free_port()
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=ROOT, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/gradio_api/info"
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"app.py exited with {proc.returncode} before it was ready")
            try:
                urllib.request.urlopen(url, timeout=2).read()
                return time.perf_counter() - t, cpu_seconds(proc.pid)
            except OSError:
                if time.perf_counter() - t > timeout:
                    raise RuntimeError(f"app.py was not ready after {timeout:.0f} s") from None
                time.sleep(0.05)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def slowest_imports(n: int = 15) -> list[tuple[float, str]]:
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", "import app"], cwd=ROOT, env=env(),
                         capture_output=True, text=True, check=True).stderr
    rows = []
    for line in out.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            rows.append((int(parts[1]) / 1e6, parts[2].rstrip()))
    return sorted(rows, reverse=True)[:n]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--importtime", action="store_true", help="also list the slowest imports of app.py")
    args = parser.parse_args(argv)
    time_bare()  # warm the file cache for both
    bare, app = [], []
    for _ in range(args.repeats):
        bare.append(time_bare())
        app.append(time_app())
    for i, what in ((0, "wall"), (1, "CPU")):
        b, a = statistics.median(r[i] for r in bare), statistics.median(r[i] for r in app)
        print(f"{what} time: bare `import gradio, torch` {b:.2f} s (runs: {', '.join(f'{r[i]:.2f}' for r in bare)}); "
              f"`python app.py` until /gradio_api/info answers {a:.2f} s "
              f"(runs: {', '.join(f'{r[i]:.2f}' for r in app)})")
        print(f"   ratio app / bare ({what}): {a / b:.2f}x  (target <= 1.50)")
    if args.importtime:
        print("\nslowest imports of `import app` (cumulative seconds):")
        for sec, name in slowest_imports():
            print(f"   {sec:6.2f}  {name}")


if __name__ == "__main__":
    main()
