"""Training speed of the sweep's shapes, interleaved, so a busy machine slows them all alike.

    python scripts/sweep_speed.py --threads 1 --rounds 5

Each round times a few AdamW steps (forward, loss, backward, clip, step; batch 16 x 256 tokens, as
the sweep) of every shape in turn; the median over rounds is printed with the ratio to B. The
sweep's own tokens/s come from runs minutes apart on a machine shared with other jobs; these
ratios are the fair comparison of speed.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from llm_core import GPTConfig, build_untrained  # noqa: E402

SHAPES = {  # name: (layers, heads, dims, vocabulary)
    "A": (4, 4, 256, 4096),
    "B": (6, 4, 256, 4096),
    "C": (6, 4, 256, 8192),
    "D": (8, 5, 320, 4096),
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=3, help="timed steps per shape per round")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--context", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    runs = {}
    for name, (layers, heads, dims, vocab) in SHAPES.items():
        cfg = GPTConfig(vocab_size=vocab, context_length=args.context, emb_dim=dims, n_heads=heads,
                        n_layers=layers, drop_rate=0.0, qkv_bias=False, tie_weights=True)
        model = build_untrained(cfg, seed=1).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, vocab, (args.batch_size, args.context + 1), generator=g)
        runs[name] = (model, opt, x[:, :-1], x[:, 1:])

    def step(name):
        model, opt, inp, tgt = runs[name]
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(inp).flatten(0, 1), tgt.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    for name in runs:  # warm-up: first steps allocate
        step(name)
    rates = {name: [] for name in runs}
    tokens = args.steps * args.batch_size * args.context
    for _ in range(args.rounds):
        for name in runs:
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step(name)
            rates[name].append(tokens / (time.perf_counter() - t0))
    ref = statistics.median(rates["B"])
    print("| shape | parameters | tokens/s (median of rounds) | vs B |\n|---|---:|---:|---:|")
    for name, (layers, heads, dims, vocab) in SHAPES.items():
        n = sum(p.numel() for p in runs[name][0].parameters())
        med = statistics.median(rates[name])
        print(f"| {name}: {layers} layers, {heads} heads, {dims} dims, vocab {vocab:,} | {n:,} | {med:,.0f} | "
              f"{med / ref:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
