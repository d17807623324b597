"""SIGKILL during saves, then a restart: every checkpoint visible afterwards loads, and nothing
half-written is left (issue 12)."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.api.test_hostile import start_server, tracebacks

ROOT = Path(__file__).resolve().parents[2]

# Saves a 13M-parameter model (53 MB) over and over, alternating two names, so a kill lands in
# the middle of a save (writing, or between the renames) most of the time.
SAVER = """
import sys
from llm_core import PRESETS, build_untrained, runs
model = build_untrained(PRESETS["tiny"])
owner = runs.owner_id("kill-test")
i = 0
while True:
    runs.save_run(owner, f"run{i % 2}", model, None, {"save": i}, overwrite=True)
    i += 1
    print("saved", i, flush=True)
"""


@pytest.mark.slow
def test_kills_during_saves_leave_only_loadable_checkpoints(tmp_path):
    env = dict(os.environ, LLM_EXPLORER_HOME=str(tmp_path), HF_HUB_OFFLINE="1")
    rng = random.Random(7)
    for _ in range(5):
        proc = subprocess.Popen([sys.executable, "-c", SAVER], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().startswith("saved")   # one save is complete
        time.sleep(rng.uniform(0.05, 0.6))                 # then die somewhere in a later one
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    from llm_core import runs
    owner_dir = tmp_path / "checkpoints" / runs.owner_id("kill-test")
    log = tmp_path / "server.log"
    server, url = start_server(tmp_path, log)          # the app's start-up cleans up
    try:
        leftovers = [p.name for p in owner_dir.iterdir() if p.name.startswith(".")]
        assert leftovers == []
        visible = sorted(p for p in owner_dir.iterdir())
        assert visible, "the first save completed, so at least one checkpoint must be there"
        from llm_core.checkpoint import load_checkpoint
        for folder in visible:
            model, _, meta = load_checkpoint(folder)
            assert model.cfg.emb_dim == 128 and isinstance(meta["save"], int)
    finally:
        server.terminate()
        server.wait(30)
    assert not tracebacks(log)
