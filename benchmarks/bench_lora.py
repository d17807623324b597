"""LoRA training steps: ours (llm_core.lora on GPTModel) vs peft + transformers' GPT-2, same shape.

    .venv/bin/python benchmarks/bench_lora.py [--batch 8] [--tokens 128] [--steps 1]
                                              [--repeats 6] [--threads N] [--device cpu|cuda]

Both sides hold the same random GPT-2-small weights (a ``GPT2LMHeadModel`` is saved with
``save_pretrained`` and loaded with ``llm_core.load_model``), dropout off, rank-16 LoRA
(alpha 16) on attention and feed-forward:

- ours: ``apply_lora(model, 16, 16, ("attention", "feed-forward"))`` — W_query, W_key,
  W_value, out_proj, both feed-forward Linears (the book's GPTModel keeps q/k/v separate);
- peft: ``LoraConfig(r=16, target_modules=["c_attn", "c_proj", "c_fc"])`` — the fused qkv
  projection, both c_proj and c_fc (GPT-2's layout), Conv1D weights (``fan_in_fan_out``).

One step = forward on a [batch, tokens] batch of random ids, next-token cross-entropy over
the full vocabulary (computed the same way for both), backward, AdamW step on the LoRA
parameters. Timings are medians over single steps, alternating sides, in one run; on a shared machine
read the ratio, not the absolute numbers. Target: ours / peft tokens/s >= 1.0.

Measured (2026-11-23, the project's 2-core machine, shared with a training job, ``--threads 1
--repeats 4``): 8.97 vs 9.00 s per step (114 vs 114 tokens/s), **1.00x** median, 1.04x fastest
step; trainable parameters 2,654,208 (ours, q/k/v separate) vs 2,359,296 (peft, fused c_attn).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from llm_core import GPT_CONFIG_124M  # noqa: E402
from llm_core.lora import apply_lora, count_parameters  # noqa: E402

from _shared import random_gpt2_pair  # noqa: E402


def gpt2_pair(seed: int, device: str):
    """(transformers + peft model, our LoRA model) from the same random GPT-2-small weights."""
    from peft import LoraConfig, get_peft_model

    hf, ours = random_gpt2_pair(seed)
    ours = ours.to(device).train()
    apply_lora(ours, 16, 16, ("attention", "feed-forward"), generator=torch.Generator().manual_seed(seed))
    theirs = get_peft_model(hf, LoraConfig(r=16, lora_alpha=16, lora_dropout=0.0, bias="none",
                                           target_modules=["c_attn", "c_proj", "c_fc"], fan_in_fan_out=True))
    theirs = theirs.to(device).train()
    return theirs, ours


def step_fn(model, hf: bool, batch: torch.Tensor, targets: torch.Tensor):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        logits = model(input_ids=batch, use_cache=False).logits if hf else model(batch)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        loss.backward()
        opt.step()
        return loss.item()
    return step


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--steps", type=int, default=1, help="timed steps per side per repeat")
    ap.add_argument("--repeats", type=int, default=6)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    theirs, ours = gpt2_pair(123, device)
    ours_counts = count_parameters(ours)
    theirs_trainable = sum(p.numel() for p in theirs.parameters() if p.requires_grad)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, GPT_CONFIG_124M.vocab_size, (args.batch, args.tokens + 1), generator=g).to(device)
    batch, targets = ids[:, :-1].contiguous(), ids[:, 1:].contiguous()
    with torch.no_grad():  # same weights, LoRA B = 0: both compute the same function at the start
        a = theirs(input_ids=batch, use_cache=False).logits
        b = ours(batch)
        max_diff = (a - b).abs().max().item()
    steps = {"ours": step_fn(ours, False, batch, targets), "peft+transformers": step_fn(theirs, True, batch, targets)}
    for fn in steps.values():  # warm-up (allocator, kernels, AdamW state)
        fn()
    times: dict[str, list[float]] = {k: [] for k in steps}
    cpu: dict[str, list[float]] = {k: [] for k in steps}  # process CPU time: steadier on a busy machine
    order = list(steps.items())
    for r in range(args.repeats):
        # alternate which side goes first, so drifts in machine load hit both alike
        for name, fn in (order if r % 2 == 0 else order[::-1]):
            for _ in range(args.steps):
                if device == "cuda":
                    torch.cuda.synchronize()
                t0, c0 = time.perf_counter(), time.process_time()
                fn()
                if device == "cuda":
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
    tokens = args.batch * args.tokens
    print(f"LoRA training step, GPT-2 small shape (124M), batch {args.batch} x {args.tokens} tokens, rank 16, "
          f"alpha 16, attention + feed-forward, device {device}, {torch.get_num_threads()} threads")
    print(f"trainable parameters: ours {ours_counts.trainable:,} (q/k/v separate), "
          f"peft {theirs_trainable:,} (fused c_attn); max |logit difference| at start {max_diff:.2e}")
    rate, cpu_rate, best = {}, {}, {}
    for name, ts in times.items():
        med = statistics.median(ts)
        rate[name] = tokens / med
        best[name] = tokens / min(ts)  # the least disturbed step
        cpu_rate[name] = tokens / statistics.median(cpu[name])
        print(f"{name:>18}: {med * 1000:8.1f} ms/step  {rate[name]:8.1f} tokens/s  "
              f"{cpu_rate[name]:8.1f} tokens per CPU-second  (steps: {', '.join(f'{t * 1000:.0f}' for t in ts)} ms)")
    print(f"ratio ours / peft+transformers: {rate['ours'] / rate['peft+transformers']:.2f}x tokens/s (median), "
          f"{best['ours'] / best['peft+transformers']:.2f}x (fastest step), "
          f"{cpu_rate['ours'] / cpu_rate['peft+transformers']:.2f}x per CPU-second (target >= 1.0x)")


if __name__ == "__main__":
    main()
