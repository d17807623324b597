"""Pre-training step throughput: ours vs the book's ``train_model_simple`` step vs transformers.

    .venv/bin/python benchmarks/bench_train.py [--steps 3] [--threads N] [--shapes shipped,gpt2-256,gpt2-124m]

One training step = forward, cross-entropy, backward, AdamW update, on the same random token
batch from the same initial weights, three ways:

- **ours**: ``llm_core.training.train_step`` with ``make_optimizer`` (what the Pretrain tab
  and ``python -m llm_core.pretrain`` run): fused AdamW, SDPA attention, gradient clipping at
  1.0 (extra work the book's loop does not do);
- **book**: the body of ``train_model_simple`` from the ``llms-from-scratch`` package
  (``optimizer.zero_grad()``, ``calc_loss_batch``, ``loss.backward()``, ``optimizer.step()``
  with ``torch.optim.AdamW(lr=4e-4, weight_decay=0.1)`` as in chapter 5), on the package's
  own ``GPTModel`` (chapter 4). The package is installed for this benchmark only, with
  ``--no-deps`` into ``.cache/bench-deps`` (its declared dependencies include tensorflow and
  an old numpy); its chapter-5 module imports matplotlib for plotting helpers only, so an
  empty stand-in module is used when matplotlib is not installed. The loop's evaluations and
  samples are left out: only the step is timed;
- **transformers**: ``GPT2LMHeadModel`` (SDPA attention) of the same shape and weights,
  logits → cross-entropy on the same targets → backward → ``torch.optim.AdamW``.

Shapes: the shipped model's (4 layers, 192 dims, context 128, vocabulary 4,096, batch 16);
a GPT-2 small at context 256 (12 layers, 768 dims, batch 2, the book's chapter-5 setting);
the book's GPT_CONFIG_124M (context 1024, dropout 0.1, batch 1). Untied heads everywhere (the
book's GPTModel has no tying). The first step's losses are printed to show every side does
the same computation. MFU = model FLOPs (6·N per token for the matmul parameters, plus
12·layers·context·dims for attention) / the machine's fp32 matmul peak, measured in the same
run with a 2048³ ``torch.mm`` (the best rate seen, re-measured between the rounds of steps:
on a loaded machine a single measurement can be far below what the steps then get). Each side runs one warm-up step, then ``--steps`` timed steps
interleaved with the other sides' (all models are built first, so changes in the machine's
load hit every side alike); the median step is used. ``--compile`` adds our step through
``torch.compile`` (its warm-up step is the compilation, printed separately).

Measured (2026-12-01, the project's 2-core AVX2 EPYC, shared with four other jobs at a load
of 5-10, so the absolute numbers are low and noisy; read the ratios). Interleaved run,
``--steps 2``, tokens/s (MFU against the best matmul rate seen):

==========================  ===========  ===========  ============  =========  ============
shape                       ours         book         transformers  ours/book  ours/transf.
==========================  ===========  ===========  ============  =========  ============
shipped (4 × 192, ctx 128)  763 (12 %)   459 (7 %)    785 (13 %)    **1.66x**  **0.97x**
GPT-2 small, ctx 256        46 (35 %)    22 (17 %)    31 (24 %)     **2.09x**  **1.47x**
GPT_CONFIG_124M, ctx 1024   33 (56 %)    20 (35 %)    26 (44 %)     **1.61x**  **1.27x**
==========================  ===========  ===========  ============  =========  ============

An earlier interleaved run (``--steps 3 --compile``, shipped and GPT-2-256 only) gave the
shipped shape 1.13x the book and 1.00x transformers, GPT-2-256 2.28x and 1.08x; so on the
shipped shape the book target (1.3x) is met in one run and missed in the other, transformers
is at parity, and on the GPT-2 shapes both targets are met. Where our margin comes from: the
fused AdamW (one optimizer step over GPT-2 small's 163M parameters took ~2.0 s fused vs
~7.6 s ``foreach`` here) and SDPA attention; on the shipped 3.4M-parameter model the
optimizer is negligible and the forward/backward matmuls (the same on every side) dominate.
``torch.compile`` (inductor) measured 0.96x (shipped, after 6 s of compiling) and 0.88x
(GPT-2-256, after 113 s): no gain on this CPU, so training does not use it by default
(``python -m llm_core.pretrain --compile`` opts in; not measured on a GPU). Sequential runs
(one side after another) earlier the same day swung from 0.43x to 3.44x with the load, which
is why the sides are now interleaved.
"""
from __future__ import annotations

import argparse
import gc
import importlib
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from llm_core.config import GPT_CONFIG_124M, GPTConfig  # noqa: E402
from llm_core.model import GPTModel  # noqa: E402
from llm_core.training import gpt2_init_, make_optimizer, train_step  # noqa: E402

from _shared import median_seconds, transformers_twin  # noqa: E402

DEPS = ROOT / ".cache" / "bench-deps"

SHAPES = {
    "shipped": ("shipped model (pydoc-gpt)", GPTConfig(vocab_size=4096, context_length=128, emb_dim=192,
                                                       n_heads=4, n_layers=4, drop_rate=0.0), 16),
    "gpt2-256": ("GPT-2 small, context 256", GPT_CONFIG_124M.with_(context_length=256), 2),
    "gpt2-124m": ("the book's GPT_CONFIG_124M (context 1024)", GPT_CONFIG_124M, 1),
}


def book_package():
    """(ch04, ch05) of ``llms-from-scratch``, installed here with --no-deps when missing."""
    try:
        return _import_book()
    except ImportError:
        pass
    DEPS.mkdir(parents=True, exist_ok=True)
    print(f"installing llms-from-scratch (--no-deps) into {DEPS} ...", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(DEPS),
                    "llms-from-scratch"], check=True)
    importlib.invalidate_caches()
    return _import_book()


def _import_book():
    if str(DEPS) not in sys.path:
        sys.path.insert(0, str(DEPS))
    try:
        import matplotlib  # noqa: F401
    except ImportError:  # ch05 imports it for its plotting helpers only
        mpl = types.ModuleType("matplotlib")
        mpl.pyplot = types.ModuleType("matplotlib.pyplot")
        mpl.ticker = types.ModuleType("matplotlib.ticker")
        mpl.ticker.MaxNLocator = object
        sys.modules.update({"matplotlib": mpl, "matplotlib.pyplot": mpl.pyplot, "matplotlib.ticker": mpl.ticker})
    ch04 = importlib.import_module("llms_from_scratch.ch04")
    ch05 = importlib.import_module("llms_from_scratch.ch05")
    return ch04, ch05


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """Measured fp32 matmul FLOP/s (median of ``repeats``)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n ** 3 / median_seconds(lambda: a @ b, repeats)


def flops_per_token(cfg: GPTConfig) -> float:
    """Training FLOPs per token: 6 per matmul weight (forward + backward), plus attention."""
    d, L = cfg.emb_dim, cfg.n_layers
    matmul_params = L * (4 * d * d + 8 * d * d) + d * cfg.vocab_size
    return 6 * matmul_params + 12 * L * cfg.context_length * d


def run_shape(key: str, steps: int, peak: float, ch04, ch05, seed: int, compile_too: bool = False) -> dict:
    label, cfg, batch = SHAPES[key]
    gen = torch.Generator().manual_seed(seed)
    data = torch.randint(0, cfg.vocab_size, (batch, cfg.context_length + 1), generator=gen)
    inputs, targets = data[:, :-1], data[:, 1:]
    tokens = inputs.numel()
    cpu = torch.device("cpu")
    init = gpt2_init_(GPTModel(cfg), seed=seed)
    state = {k: v.clone() for k, v in init.state_dict().items()}
    sides = {}  # name -> one training step, returning its loss

    def ours_side(compiled: bool):
        torch.manual_seed(seed)
        model = GPTModel(cfg)
        model.load_state_dict(state)
        model.train()
        opt = make_optimizer(model.parameters(), lr=4e-4, weight_decay=0.1)
        step_model = torch.compile(model) if compiled else model
        return lambda: train_step(step_model, opt, inputs, targets, cpu, 1.0)[0]

    # ours: what train_model runs per step
    sides["ours"] = ours_side(False)
    if compile_too:  # the same step through torch.compile (inductor); its warm-up step compiles
        sides["ours + compile"] = ours_side(True)

    # the book's train_model_simple step, on the book's GPTModel
    torch.manual_seed(seed)
    book = ch04.GPTModel(cfg.to_dict())
    book.load_state_dict(state, strict=False)  # same names (the book's); its mask buffer stays
    book.train()
    book_opt = torch.optim.AdamW(book.parameters(), lr=0.0004, weight_decay=0.1)

    def book_step():
        book_opt.zero_grad()
        loss = ch05.calc_loss_batch(inputs, targets, book, cpu)
        loss.backward()
        book_opt.step()
        return loss.item()

    sides["book"] = book_step

    # transformers GPT2LMHeadModel, same weights
    torch.manual_seed(seed)
    theirs = transformers_twin(init, cfg.drop_rate).train()
    hf_opt = torch.optim.AdamW(theirs.parameters(), lr=4e-4, weight_decay=0.1)

    def hf_step():
        hf_opt.zero_grad()
        logits = theirs(input_ids=inputs).logits
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        loss.backward()
        hf_opt.step()
        return loss.item()

    sides["transformers"] = hf_step
    del init
    gc.collect()

    # One warm-up step each (the compiled side compiles here), then the timed steps
    # interleaved, so changes in the machine's load hit every side alike.
    first, warmup, times = {}, {}, {name: [] for name in sides}
    for name, fn in sides.items():
        t = time.perf_counter()
        first[name] = fn()
        warmup[name] = time.perf_counter() - t
    for _ in range(steps):
        for name, fn in sides.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
        peak = max(peak, matmul_peak(repeats=2))  # the best the machine gave during these steps
    results = {name: (first[name], statistics.median(times[name])) for name in sides}
    compile_s = warmup["ours + compile"] - results["ours + compile"][1] if compile_too else None

    fpt = flops_per_token(cfg)
    print(f"\n== {label}: {cfg.n_layers} layers, {cfg.emb_dim} dims, context {cfg.context_length}, "
          f"vocabulary {cfg.vocab_size:,}, batch {batch} ({tokens:,} tokens/step), dropout {cfg.drop_rate}, "
          f"median of {steps} steps; MFU against the best fp32 matmul rate seen, {peak / 1e9:.1f} GFLOP/s")
    rates = {}
    for name, (first_loss, sec) in results.items():
        rates[name] = tokens / sec
        mfu = rates[name] * fpt / peak
        print(f"   {name:<14s} {rates[name]:9,.0f} tokens/s   {sec * 1000:8.0f} ms/step   MFU {100 * mfu:5.1f}%   "
              f"first-step loss {first_loss:.4f}")
    print(f"   ours / book:         {rates['ours'] / rates['book']:.2f}x  (target >= 1.30)")
    print(f"   ours / transformers: {rates['ours'] / rates['transformers']:.2f}x  (target >= 1.00)")
    if compile_s is not None:
        print(f"   ours + torch.compile / ours: {rates['ours + compile'] / rates['ours']:.2f}x after "
              f"{compile_s:.0f} s of compiling (python -m llm_core.pretrain --compile)")
    return rates


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per side (after one warm-up)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--shapes", default=",".join(SHAPES), help=f"comma-separated, of {', '.join(SHAPES)}")
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--compile", action="store_true", help="also time our step through torch.compile")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown:
        parser.error(f"unknown shape(s) {unknown}; choose from {', '.join(SHAPES)}")
    import transformers

    ch04, ch05 = book_package()
    peak = matmul_peak()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, llms-from-scratch "
          f"(chapter 4/5 modules from {Path(ch05.__file__).parent}), {torch.get_num_threads()} threads, CPU; "
          f"fp32 matmul peak (2048³ mm) {peak / 1e9:.1f} GFLOP/s", flush=True)
    for key in shapes:
        run_shape(key, args.steps, peak, ch04, ch05, args.seed, args.compile)
        sys.stdout.flush()


if __name__ == "__main__":
    main()
