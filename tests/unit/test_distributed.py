"""Several processes (DDP over gloo) and resuming (llm_core/distributed.py, python -m llm_core.pretrain).

The DDP and resume tests run the real CLI in subprocesses (torchrun for two ranks), so they
are slow-marked; the batch order and the saved state are tested directly and fast.
"""
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llm_core.config import GPTConfig
from llm_core.data import GPTDatasetV1
from llm_core.distributed import EpochBatches, load_resume_state, save_resume_state
from llm_core.model import GPTModel
from llm_core.training import make_optimizer, train_step
from tests.local_server import free_port

ROOT = Path(__file__).resolve().parents[2]


class Windows:
    """A dataset of n (input, target) windows whose ids tell which window they are."""

    def __init__(self, n, t=3):
        self.rows = [(torch.full((t,), i), torch.full((t,), i + 1000)) for i in range(n)]

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def window_ids(batches):
    return [b[0][:, 0].tolist() for b in batches]


def test_epoch_batches_order_is_fixed_by_seed_and_epoch():
    a = EpochBatches(Windows(10), batch_size=4, seed=3)
    assert len(a) == 2  # the incomplete third batch is dropped
    first, second = window_ids(a), window_ids(a)
    assert first == window_ids(EpochBatches(Windows(10), 4, seed=3))
    assert first != second and a.epoch == 2  # a new order each epoch
    assert first != window_ids(EpochBatches(Windows(10), 4, seed=4))
    assert all(len(set(sum(ep, []))) == 8 for ep in (first, second))  # no window twice in an epoch


def test_ranks_take_equal_disjoint_shares_of_each_global_batch():
    whole = window_ids(EpochBatches(Windows(12), 4, seed=1))
    r0 = window_ids(EpochBatches(Windows(12), 4, seed=1, rank=0, world_size=2))
    r1 = window_ids(EpochBatches(Windows(12), 4, seed=1, rank=1, world_size=2))
    assert [a + b for a, b in zip(r0, r1)] == whole
    with pytest.raises(ValueError, match="divisible"):
        EpochBatches(Windows(12), 5, seed=1, world_size=2)


def test_position_is_saved_and_restored_mid_epoch():
    a = EpochBatches(Windows(20), 4, seed=9)
    it = iter(a)
    seen = [next(it)[0][:, 0].tolist() for _ in range(2)]
    b = EpochBatches(Windows(20), 4, seed=9)
    b.load_state_dict(a.state_dict())
    assert window_ids(b) == window_ids(EpochBatches(Windows(20), 4, seed=9))[2:]
    assert seen == window_ids(EpochBatches(Windows(20), 4, seed=9))[:2]
    with pytest.raises(ValueError, match="same --batch-size"):
        EpochBatches(Windows(20), 2, seed=9).load_state_dict(a.state_dict())


def test_resume_state_round_trip_gives_the_same_next_steps(tmp_path):
    cfg = GPTConfig(vocab_size=50, context_length=8, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.1,
                    tie_weights=True)
    ds = GPTDatasetV1("", None, 8, 8, token_ids=[random.Random(0).randrange(50) for _ in range(400)])

    def fresh():
        torch.manual_seed(0)
        m = GPTModel(cfg).train()
        return m, make_optimizer(m.parameters(), 1e-2, 0.1), EpochBatches(ds, 4, seed=5)

    def run(model, opt, batches, n):
        out, it = [], iter(batches)
        for _ in range(n):
            x, y = next(it)
            out.append(train_step(model, opt, x, y, "cpu", 1.0)[0])
        return out

    model, opt, batches = fresh()
    run(model, opt, batches, 3)
    save_resume_state(tmp_path, model, opt, {"step": 3}, batches)
    expected = run(model, opt, batches, 4)  # uninterrupted: dropout and data continue
    model2, opt2, batches2 = fresh()
    assert load_resume_state(tmp_path, model2, opt2, batches2)["step"] == 3
    assert run(model2, opt2, batches2, 4) == expected
    assert not any(p.name.startswith(".resume") for p in tmp_path.iterdir())  # no temporary left


def test_each_rank_takes_back_its_own_random_generators(tmp_path):
    model = GPTModel(GPTConfig(vocab_size=20, context_length=4, emb_dim=8, n_heads=2, n_layers=1))
    opt = make_optimizer(model.parameters(), 1e-3, 0.0)
    batches = EpochBatches(Windows(8), 2, seed=1)
    states = {}
    for rank, seed in ((0, 11), (1, 22)):  # what two ranks with their own dropout streams hand over
        torch.manual_seed(seed)
        states[f"rank{rank}.cpu"] = torch.get_rng_state()
    save_resume_state(tmp_path, model, opt, {"step": 1}, batches, states)
    draws = {}
    for rank, seed in ((0, 11), (1, 22)):
        torch.manual_seed(seed)
        draws[rank] = torch.rand(3)
    for rank in (1, 0):
        torch.manual_seed(999)
        info = load_resume_state(tmp_path, model, opt, EpochBatches(Windows(8), 2, seed=1), rank=rank)
        assert info["rng_restored"]
        assert torch.equal(torch.rand(3), draws[rank])
    torch.manual_seed(999)
    expected = torch.rand(3)
    torch.manual_seed(999)  # a rank the saved run did not have keeps its own seeding
    assert not load_resume_state(tmp_path, model, opt, EpochBatches(Windows(8), 2, seed=1), rank=2)["rng_restored"]
    assert torch.equal(torch.rand(3), expected)


# ---------------------------------------------------------------- the CLI, in real processes

@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    words = "the a list of module function returns value string object class method file data type".split()
    rnd = random.Random(0)
    path = tmp_path_factory.mktemp("corpus") / "text.txt"
    path.write_text(" ".join(rnd.choice(words) for _ in range(4000)))
    return path


def cli_args(corpus, steps, *extra):
    return ["--text-file", str(corpus), "--tokenizer", "gpt2", "--layers", "2", "--heads", "2", "--emb-dim", "32",
            "--context", "16", "--batch-size", "4", "--lr", "1e-3", "--warmup", "2", "--steps", str(steps),
            "--eval-batches", "1", "--threads", "1", "--seed", "7", "--log-steps", *extra]


def env():
    e = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return e


def step_losses(log: Path) -> dict[int, float]:
    out = {}
    for line in log.read_text().splitlines():
        ev = json.loads(line)
        if ev["step"] > 0 and ev["batch_loss"] is not None:
            out[ev["step"]] = ev["batch_loss"]
    return out


def descendants(pid: int) -> list[int]:
    """The processes started, directly or not, by ``pid`` (from /proc: torchrun's workers
    live on when torchrun alone is killed)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        kids = [p for p, parent in parents.items() if parent in frontier]
        found += kids
        frontier = kids
    return found


def run_cli(module: str, *args: str) -> str:
    """``python -m module args`` in one process; it must succeed. Returns its stdout."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env(), check=True,
                          capture_output=True, text=True, timeout=300).stdout


def run_two_processes(module: str, *args: str) -> str:
    """The same command as two gloo processes under torchrun; it must succeed and say so. Returns stdout."""
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", str(free_port()), "-m", module, *args],
                         cwd=ROOT, env=env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "× 2 processes (gloo)" in run.stdout
    return run.stdout


def assert_same_step_losses(one: Path, two: Path, steps: int) -> None:
    a, b = step_losses(one), step_losses(two)
    assert sorted(a) == sorted(b) == list(range(1, steps + 1))
    for s in a:
        assert abs(a[s] - b[s]) <= 1e-5, (s, a[s], b[s])
    assert len(set(a.values())) == steps  # the loss moved: the model really trained


@pytest.mark.slow
def test_two_gloo_processes_give_the_loss_curve_of_one(corpus, tmp_path):
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    args = cli_args(corpus, 5, "--eval-interval", "5", "--dropout", "0")
    run_cli("llm_core.pretrain", *args, "--log-json", str(one))
    run_two_processes("llm_core.pretrain", *args, "--log-json", str(two))
    assert_same_step_losses(one, two, 5)


@pytest.mark.slow
def test_a_killed_run_resumed_gives_the_same_next_losses(corpus, tmp_path):
    steps = 12
    args = cli_args(corpus, steps, "--eval-interval", "2", "--dropout", "0.1")
    full_log = tmp_path / "full.jsonl"
    run_cli("llm_core.pretrain", *args, "--out", str(tmp_path / "full"), "--log-json", str(full_log))
    # The same run, killed (SIGKILL: no clean-up) once it is past its step-4 evaluation.
    killed_dir = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "llm_core.pretrain", *args, "--out", str(killed_dir)],
                            cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        if line.startswith("step      5/"):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    saved = json.loads((killed_dir / "resume" / "state.json").read_text())["step"]
    assert 4 <= saved < steps
    resumed_log = tmp_path / "resumed.jsonl"
    out = run_cli("llm_core.pretrain", *args, "--resume", str(killed_dir), "--log-json", str(resumed_log))
    assert f"resuming {killed_dir} at step {saved}" in out
    full, resumed = step_losses(full_log), step_losses(resumed_log)
    assert sorted(resumed) == list(range(saved + 1, steps + 1))
    for s in resumed:
        assert abs(resumed[s] - full[s]) <= 1e-6, (s, resumed[s], full[s])


@pytest.mark.slow
def test_two_gloo_processes_killed_and_resumed_give_the_same_next_losses(corpus, tmp_path):
    """Dropout on: each rank draws its own masks, so each must get its own generators back."""
    steps = 12
    args = cli_args(corpus, steps, "--eval-interval", "2", "--dropout", "0.1")

    def torchrun(*extra):
        return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--master_port", str(free_port()), "-m", "llm_core.pretrain", *args, *extra]

    full_log = tmp_path / "full.jsonl"
    run = subprocess.run(torchrun("--out", str(tmp_path / "full"), "--log-json", str(full_log)),
                         cwd=ROOT, env=env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    killed_dir = tmp_path / "killed"
    proc = subprocess.Popen(torchrun("--out", str(killed_dir)), cwd=ROOT, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        for line in proc.stdout:
            if line.startswith("step      5/"):
                break
    finally:  # SIGKILL to torchrun and both workers at once (no clean-up anywhere)
        for pid in [*descendants(proc.pid), proc.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(timeout=60)
    saved = json.loads((killed_dir / "resume" / "state.json").read_text())["step"]
    assert 4 <= saved < steps
    from safetensors import safe_open
    with safe_open(str(killed_dir / "resume" / "optimizer.safetensors"), "pt") as f:
        rank0, rank1 = f.get_tensor("rng.rank0.cpu"), f.get_tensor("rng.rank1.cpu")
    assert not torch.equal(rank0, rank1)  # two dropout streams, both kept
    resumed_log = tmp_path / "resumed.jsonl"
    out = subprocess.run(torchrun("--resume", str(killed_dir), "--log-json", str(resumed_log)),
                         cwd=ROOT, env=env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"resuming {killed_dir} at step {saved}" in out.stdout
    full, resumed = step_losses(full_log), step_losses(resumed_log)
    assert sorted(resumed) == list(range(saved + 1, steps + 1))
    for s in resumed:
        assert abs(resumed[s] - full[s]) <= 1e-6, (s, resumed[s], full[s])


# ---------------------------------------------------------------- the fine-tuning CLIs under torchrun

@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    """A small saved GPT with a byte-level tokenizer, loadable by folder name."""
    from llm_core.checkpoint import save_checkpoint
    from llm_core.model import build_untrained
    from llm_core.tokenizers import GPT2_PATTERN, bpe_from_merges

    tok = bpe_from_merges("bytes", {bytes([i]): i for i in range(256)}, GPT2_PATTERN, with_endoftext=True)
    cfg = GPTConfig(vocab_size=tok.n_vocab, context_length=256, emb_dim=32, n_heads=2, n_layers=2, drop_rate=0.0)
    return save_checkpoint(tmp_path_factory.mktemp("base") / "tiny", build_untrained(cfg, seed=3), tok, {"name": "tiny"})


def finetune_data(task: str, folder: Path) -> Path:
    """Examples of uneven lengths, so the ranks' shares of a batch hold unequal numbers of tokens."""
    rnd = random.Random(1)
    words = "red green blue pink cat dog cow owl".split()
    if task == "classification":
        path = folder / "colours.csv"
        rows = ["text,label"]
        for i in range(60):
            rows.append(" ".join(rnd.choice(words[:4] if i % 2 else words[4:]) for _ in range(rnd.randint(1, 6)))
                        + ("," + ("colour" if i % 2 else "animal")))
        path.write_text("\n".join(rows) + "\n")
    else:
        path = folder / "colours.json"
        entries = [{"instruction": "Repeat the words.", "input": " ".join(rnd.choice(words) for _ in range(n)),
                    "output": ""} for n in (rnd.randint(1, 8) for _ in range(60))]
        for e in entries:
            e["output"] = e["input"]
        path.write_text(json.dumps(entries))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("task, method", [("classification", "lora"), ("instruction", "full")])
def test_two_gloo_processes_fine_tune_like_one(tiny_base, tmp_path, task, method):
    """--batch-size 5 on two ranks: shares of 3 and 2 rows with unequal token counts, which the
    loss weighting turns back into the one-process mean."""
    args = ["--model", str(tiny_base), "--task", task, "--data", str(finetune_data(task, tmp_path)),
            "--method", method, "--rank", "4", "--alpha", "8", "--steps", "5", "--batch-size", "5", "--lr", "3e-3",
            "--eval-interval", "5", "--eval-batches", "1", "--n-score", "0", "--threads", "1"]
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    run_cli("llm_core.finetune", *args, "--log-json", str(one))
    out = run_two_processes("llm_core.finetune", *args, "--log-json", str(two), "--out", str(tmp_path / "tuned"))
    assert "finished: finished 5 steps" in out
    assert (tmp_path / "tuned").is_dir()  # rank 0 saved the result
    assert_same_step_losses(one, two, 5)


@pytest.mark.slow
def test_instruct_tune_under_torchrun_gives_the_curve_of_one_process(tiny_base, tmp_path):
    from llm_core.checkpoint import load_checkpoint

    args = ["--model", str(tiny_base), "--steps", "4", "--eval-interval", "2", "--eval-batches", "2",
            "--batch-size", "6", "--n-computed", "2", "--n-doc", "1", "--answer-tokens", "4", "--threads", "1"]
    run_cli("llm_core.instruct_tune", *args, "--out", str(tmp_path / "one"))
    run_two_processes("llm_core.instruct_tune", *args, "--out", str(tmp_path / "two"))
    one, two = (load_checkpoint(tmp_path / d)[2] for d in ("one", "two"))
    assert one["steps"] == two["steps"] == 4
    assert [c["step"] for c in one["curve"]] == [c["step"] for c in two["curve"]] == [0, 2, 4]
    for a, b in zip(one["curve"], two["curve"]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-5)
        assert a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-5)
    assert one["curve"][-1]["train_loss"] < one["curve"][0]["train_loss"]  # it trained
    assert two["after"]["val_loss"] == pytest.approx(one["after"]["val_loss"], abs=1e-5)
