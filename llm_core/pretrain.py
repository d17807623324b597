"""Pre-train a GPT from scratch on the command line (the same loop the Pretrain tab runs).

    python -m llm_core.pretrain --corpus pydoc --tokenizer bpe --vocab-size 4096 \\
        --layers 4 --heads 4 --emb-dim 256 --context 128 --steps 3000 --out runs/my-gpt

Prints one line per evaluation. With ``--out`` the best model so far (by validation
loss) is saved there atomically as it trains, and once more at the end with sample
generations and the run's statistics in its metadata; at every evaluation the full training
state (model, AdamW, step, data position, random generators) goes to ``OUT/resume/``, and
``--resume OUT`` continues from it with the same next losses as a run never interrupted.

Several processes (DDP, gloo on CPUs, NCCL on GPUs), each training on its share of every
global batch (``--batch-size`` is the global batch), rank 0 logging, evaluating and saving:

    torchrun --nproc_per_node 2 -m llm_core.pretrain --batch-size 16 ... --out runs/my-gpt
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import shlex
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from . import corpus as corpus_mod
from .checkpoint import save_checkpoint
from .config import PRESETS, GPTConfig
from .data import GPTDatasetV1, create_dataloader_v1
from .device import pin_host_memory
from .distributed import DistContext, EpochBatches, load_resume_state, save_resume_state
from .files import write_atomic
from .model import GPTModel
from .training import (
    TrainConfig, calc_loss_loader, gpt2_init_, make_optimizer, pick_device, sample_text, train_model,
)

SAMPLE_PROMPTS = ("The list", "A module is", "Return the")


# ---------------------------------------------------------------- inputs

def load_corpus(args) -> tuple[str, str]:
    if args.text_file:
        return corpus_mod.load_text_upload(args.text_file, max_bytes=200_000_000), Path(args.text_file).name
    if args.corpus == "pydoc":
        return corpus_mod.pydoc_corpus(), "pydoc"
    book = corpus_mod.the_verdict()
    if not book.available:
        raise SystemExit(book.reason)
    return book.text, "the-verdict"


def bpe_tokenizer_for(text: str, vocab_size: int, name: str, log=print):
    """Train (or reuse from the cache) a byte-level BPE of ``vocab_size`` on ``text``."""
    import hashlib

    from .bpe import BPETrainResult, train_bpe

    key = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    cache = corpus_mod.CACHE_DIR / f"bpe-{key}-{vocab_size}.json"
    result = None
    if cache.is_file():
        try:
            result = BPETrainResult.from_dict(json.loads(cache.read_text()))
            log(f"BPE: reusing {cache}")
        except (ValueError, KeyError, json.JSONDecodeError):
            result = None
    if result is None:
        log(f"BPE: training a {vocab_size}-token vocabulary on {len(text):,} characters ...")
        result = train_bpe(text, vocab_size=vocab_size)
        log(f"BPE: {result.num_merges} merges in {result.seconds:.0f} s ({result.stopped_because})")
        try:
            write_atomic(cache, json.dumps(result.to_dict()).encode())
        except OSError:
            pass
    info = {"kind": "bpe", "vocab_size": result.n_vocab, "merges": result.num_merges,
            "trained_on": "the training split", "training_seconds": round(result.seconds, 1)}
    return result.to_tokenizer(name), info


def model_config(args, vocab_size: int) -> GPTConfig:
    base = PRESETS[args.preset] if args.preset else GPTConfig(context_length=128, emb_dim=256, n_heads=4,
                                                               n_layers=4, drop_rate=0.0)
    changes = {"vocab_size": vocab_size}
    for flag, field in (("layers", "n_layers"), ("heads", "n_heads"), ("emb_dim", "emb_dim"),
                        ("context", "context_length"), ("dropout", "drop_rate")):
        if getattr(args, flag) is not None:
            changes[field] = getattr(args, flag)
    if args.tie_weights:
        changes["tie_weights"] = True
    cfg = base.with_(**changes)  # validates
    return cfg


# ---------------------------------------------------------------- output

def fmt_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def format_event(ev) -> str:
    val = f"{ev.val_loss:.3f}" if ev.val_loss is not None else "-"
    # A log line: only the newline gets its mark (as in token_text), so the sample stays on one line with its spaces.
    sample = (ev.sample or "").replace("\n", "↵")
    return (f"step {ev.step:>6}/{ev.total_steps} | ep {ev.epoch} | tok {ev.tokens_seen:>11,} | "
            f"train {ev.train_loss:.3f} | val {val} | ppl {ev.perplexity:,.1f} | lr {ev.lr:.2e} | "
            f"{ev.tokens_per_s:,.0f} tok/s | {fmt_duration(ev.elapsed_s)} eta {fmt_duration(ev.eta_s)} | {sample}")


def generate_samples(model, tokenizer, prompts=SAMPLE_PROMPTS, max_new_tokens: int = 40, seed: int = 123) -> list[dict]:
    """Greedy and sampled (T=0.8, top-k 40) continuations, recorded as they come (no cherry-picking)."""
    from .generation import make_generator

    gen = make_generator(seed, model.device)
    return [{"prompt": p,
             "greedy": sample_text(model, tokenizer, p, max_new_tokens),
             "temperature_0.8_top_k_40": sample_text(model, tokenizer, p, max_new_tokens, 0.8, gen, top_k=40)}
            for p in prompts]


LICENSE_NOTE = ("the weights: MIT, like the code (`LICENSE`); the built-in corpus is this Python's own "
                "documentation (Python Software Foundation License Version 2): check the terms of any other text")


def training_report(meta: dict) -> str:
    """TRAINING.md for a checkpoint: how it was made and how good it is, from its metadata."""
    c, corpus_info, tok = meta["config"], meta["corpus"], meta["tokenizer"]
    minutes = meta.get("total_seconds", meta["seconds"]) / 60
    lines = [
        f"# {meta['name']}: how this model was trained",
        "",
        "Reproduce it (from the repository root; the corpus is rebuilt from this Python's own docs):",
        "",
        "```",
        meta["command"],
        "```",
        "",
        "| | |",
        "|---|---|",
        f"| parameters | {meta['parameters']:,} ({c['n_layers']} layers, {c['n_heads']} heads, "
        f"{c['emb_dim']} dims, context {c['context_length']}, vocabulary {c['vocab_size']:,}) |",
        f"| corpus | {corpus_info['name']}: {corpus_info['characters']:,} characters, "
        f"{corpus_info['documents']:,} documents, {corpus_info['tokens']:,} tokens "
        f"({corpus_info['train_tokens']:,} train / {corpus_info['val_tokens']:,} validation) |",
        f"| tokenizer | {tok['kind']}, {tok['vocab_size']:,} tokens"
        + (f", trained on the training split in {tok['training_seconds']} s" if tok.get("kind") == "bpe" else "")
        + " |",
        f"| training | {meta.get('total_steps_run', meta['steps']):,} steps in {minutes:.0f} min on "
        f"{meta['device']} (torch {meta['torch']}, Python {meta['python']}); {meta.get('reason', '')} |",
        f"| saved | step {meta['steps']:,} (best validation loss), {meta['tokens_seen']:,} tokens seen |",
        f"| train loss | {meta['train_loss']:.3f} |",
        f"| validation loss | {meta['val_loss']:.3f} on the evaluation batches"
        + (f"; {meta['val_loss_full']:.3f} on the whole validation split" if meta.get("val_loss_full") else "")
        + f" (an untrained model: ln {c['vocab_size']} = {math.log(c['vocab_size']):.2f}) |",
        f"| perplexity | {meta['perplexity']:,.1f}"
        + (f" ({meta['perplexity_full']:,.1f} on the whole validation split)" if meta.get("perplexity_full") else "")
        + " |",
        f"| license | {meta.get('license', LICENSE_NOTE)} |",
        "",
        "## Samples",
        "",
        "Generated once at the end of training from fixed prompts, not picked:",
        "",
    ]
    for sample in meta.get("samples", []):
        for key, text in sample.items():
            if key == "prompt":
                continue
            lines += [f"**{sample['prompt']!r}, {key.replace('_', ' ')}:**", "", "```", text.strip(), "```", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------- main

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m llm_core.pretrain", description=__doc__.split("\n\n")[0])
    g = p.add_argument_group("data")
    g.add_argument("--corpus", choices=["pydoc", "verdict"], default="pydoc",
                   help="pydoc: the Python documentation corpus (offline); verdict: the book's story (online)")
    g.add_argument("--text-file", help="train on this UTF-8 text file instead")
    g.add_argument("--train-ratio", type=float, default=0.9)
    g.add_argument("--tokenizer", choices=["gpt2", "bpe"], default="bpe")
    g.add_argument("--vocab-size", type=int, default=4096, help="BPE vocabulary (with --tokenizer bpe)")
    g.add_argument("--stride", type=int, help="window stride (default: the context length)")
    g = p.add_argument_group("model")
    g.add_argument("--preset", choices=sorted(PRESETS), help="start from a preset, then apply the flags below")
    g.add_argument("--layers", type=int)
    g.add_argument("--heads", type=int)
    g.add_argument("--emb-dim", type=int)
    g.add_argument("--context", type=int)
    g.add_argument("--dropout", type=float)
    g.add_argument("--tie-weights", action="store_true", help="share the token embedding and output head")
    g.add_argument("--init", choices=["gpt2", "pytorch"], default="gpt2",
                   help="gpt2: normal(0, 0.02) init; pytorch: the book's default init")
    g = p.add_argument_group("training")
    g.add_argument("--steps", type=int, default=1000)
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int, default=16)
    g.add_argument("--lr", type=float, default=1e-3)
    g.add_argument("--min-lr", type=float, default=None, help="cosine floor (default lr/10)")
    g.add_argument("--weight-decay", type=float, default=0.1)
    g.add_argument("--warmup", type=int, default=100)
    g.add_argument("--no-cosine", action="store_true", help="constant lr after warmup")
    g.add_argument("--grad-clip", type=float, default=1.0)
    g.add_argument("--eval-interval", type=int, default=50)
    g.add_argument("--eval-batches", type=int, default=20)
    g.add_argument("--seed", type=int, default=123)
    g.add_argument("--max-minutes", type=float, help="stop (and save) after this much wall time")
    g.add_argument("--threads", type=int, help="torch CPU threads")
    g.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    g.add_argument("--sample-prompt", default="The list")
    g = p.add_argument_group("output")
    g.add_argument("--out", help="checkpoint directory (written atomically, Hugging Face's GPT-2 layout)")
    g.add_argument("--push-to-hub", metavar="REPO", help="upload the --out checkpoint to this Hub repo at the end")
    g.add_argument("--name", help="model name recorded in the checkpoint (default: the --out folder's name)")
    g.add_argument("--save-dtype", choices=("fp32", "fp16", "bf16"), default="fp32",
                   help="store the saved model's weights in this precision (fp16/bf16: half the bytes; "
                        "they load as fp32; the --resume state stays fp32)")
    g.add_argument("--save-every", type=int, default=500,
                   help="save the best model so far at most every N steps (with --out)")
    g.add_argument("--log-json", help="also append every evaluation as a JSON line to this file")
    g.add_argument("--log-steps", action="store_true", help="print (and log) every step's batch loss too")
    g.add_argument("--compile", action="store_true", help="train through torch.compile (inductor): the first step "
                   "compiles for a minute or more, later steps run faster (see benchmarks/bench_train.py)")
    g.add_argument("--init-from", metavar="DIR", help="start from this saved model's weights, config and tokenizer "
                   "with a new optimizer and schedule (train a finished run for longer); the model flags are ignored")
    g.add_argument("--resume", metavar="DIR", help="continue the run whose --out was DIR from its last evaluation "
                   "(model, optimizer, step, data position); --out defaults to DIR")
    return p


def make_loaders(train_ids: list[int], val_ids: list[int], context: int, stride: int, batch_size: int, seed: int,
                 device, rank: int = 0, world_size: int = 1) -> tuple[EpochBatches, DataLoader, DataLoader]:
    """(training batches, the training batches evaluations read, validation batches).

    Training batches come in an order fixed by (seed, epoch), this process's share of each; the
    evaluations read the first training batches in order from their own loader. Batches bound for
    a CUDA GPU are made in pinned host memory (copied asynchronously); on the CPU nothing changes."""
    pin = pin_host_memory(device)
    train_windows = GPTDatasetV1("", None, context, stride, token_ids=train_ids)
    train_loader = EpochBatches(train_windows, batch_size, seed, rank, world_size, pin_memory=pin)
    train_eval_loader = create_dataloader_v1("", batch_size=batch_size, max_length=context, stride=stride,
                                             shuffle=False, drop_last=True, token_ids=train_ids, pin_memory=pin)
    val_loader = create_dataloader_v1("", batch_size=batch_size, max_length=context, stride=context,
                                      shuffle=False, drop_last=False, token_ids=val_ids, pin_memory=pin)
    return train_loader, train_eval_loader, val_loader


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.push_to_hub and not args.out:
        raise SystemExit("--push-to-hub needs --out DIR")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.resume and not args.out:
        args.out = args.resume
    if args.resume and args.init_from:
        raise SystemExit("use --resume (continue an interrupted run) or --init-from (start again from a model), not both")
    dist = DistContext.from_env(pick_device(args.device))
    try:
        return _run(args, argv, dist)
    finally:
        dist.close()


def _run(args, argv: list[str], dist: DistContext) -> int:
    def log(*a):
        if dist.is_main:
            print(*a, flush=True)

    command = "python -m llm_core.pretrain " + " ".join(shlex.quote(a) for a in argv)
    name = args.name or (Path(args.out).name if args.out else "pretrained")

    text, corpus_name = load_corpus(args)
    train_text, val_text = corpus_mod.train_val_split(text, args.train_ratio)
    start = None
    if args.init_from:
        from .checkpoint import CheckpointError, load_checkpoint
        try:
            start_model, tokenizer, start_meta = load_checkpoint(args.init_from)
        except (CheckpointError, OSError, ValueError) as exc:
            raise SystemExit(f"cannot start from {args.init_from}: {exc}") from None
        start = {"path": str(args.init_from), "command": start_meta.get("command"), "steps": start_meta.get("steps"),
                 "tokens_seen": start_meta.get("tokens_seen"), "val_loss": start_meta.get("val_loss")}
        tok_info = dict(start_meta.get("tokenizer") or {"kind": getattr(tokenizer, "kind", "gpt2")})
        log(f"starting from {args.init_from} (step {start['steps']}, val {start['val_loss']})")
    elif args.tokenizer == "gpt2":
        from .tokenizers import gpt2_tokenizer
        tokenizer, tok_info = gpt2_tokenizer(), {"kind": "gpt2", "vocab_size": 50257}
    else:
        tokenizer, tok_info = bpe_tokenizer_for(train_text, args.vocab_size, name, log=log)
    train_ids, val_ids = tokenizer.encode(train_text), tokenizer.encode(val_text)
    stats = corpus_mod.corpus_stats(text, name=corpus_name).to_dict()
    stats.update(tokens=len(train_ids) + len(val_ids), tokenizer=tokenizer.name,
                 train_tokens=len(train_ids), val_tokens=len(val_ids), train_ratio=args.train_ratio)
    log(f"corpus {corpus_name}: {stats['characters']:,} characters, {stats['documents']:,} documents, "
        f"{stats['tokens']:,} tokens ({len(train_ids):,} train / {len(val_ids):,} val), "
        f"vocabulary {tokenizer.n_vocab}")

    cfg = start_model.cfg if start else model_config(args, tokenizer.n_vocab)
    stride = args.stride or cfg.context_length
    device = dist.device(pick_device(args.device))
    try:
        train_loader, train_eval_loader, val_loader = make_loaders(
            train_ids, val_ids, cfg.context_length, stride, args.batch_size, args.seed, device, dist.rank,
            dist.world_size)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    if len(train_loader) == 0:
        raise SystemExit("the training text is shorter than one batch of windows; use more text, "
                         "a shorter --context or a smaller --batch-size")

    torch.manual_seed(args.seed)  # this process only: model init and dropout
    if start:
        model = start_model.train()
    else:
        model = GPTModel(cfg)
        if args.init == "gpt2":
            gpt2_init_(model, seed=args.seed)
    if dist.enabled:
        # Each rank its own dropout stream: the ranks see different rows, and one stream
        # for all would give every rank's share the same masks. Initialisation above is
        # alike on all ranks (DDP broadcasts rank 0's weights anyway).
        torch.manual_seed(args.seed * 100_003 + dist.rank)
    model.to(device)
    procs = f" × {dist.world_size} processes ({dist.backend})" if dist.enabled else ""
    log(f"model: {model.num_parameters():,} parameters ({cfg.n_layers} layers, {cfg.n_heads} heads, "
        f"{cfg.emb_dim} dims, context {cfg.context_length}, vocab {cfg.vocab_size}) on {device}{procs}; "
        f"{len(train_loader)} batches per epoch")

    tcfg = TrainConfig(max_steps=args.steps, num_epochs=args.epochs, lr=args.lr, weight_decay=args.weight_decay,
                       warmup_steps=args.warmup, cosine_decay=not args.no_cosine,
                       min_lr=args.lr / 10 if args.min_lr is None else args.min_lr,
                       grad_clip=args.grad_clip if args.grad_clip > 0 else None,
                       eval_interval=args.eval_interval, eval_batches=args.eval_batches,
                       max_seconds=args.max_minutes * 60 if args.max_minutes else None,
                       decay_by_time=bool(args.max_minutes),
                       sample_prompt=args.sample_prompt, sample_tokens=16, seed=args.seed)

    optimizer = make_optimizer(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    resume = None
    if args.resume:
        try:
            resume = load_resume_state(args.resume, model, optimizer, train_loader, rank=dist.rank,
                                       local_device=device)
        except (FileNotFoundError, ValueError, KeyError) as exc:
            raise SystemExit(f"cannot resume from {args.resume}: {exc}") from None
        log(f"resuming {args.resume} at step {resume['step']} (epoch {train_loader.epoch + 1}, "
            f"batch {train_loader.position} of {len(train_loader)})")
        if not resume.pop("rng_restored"):
            print(f"rank {dist.rank}: the run being resumed had fewer processes, so this one's dropout "
                  "stream starts from the seed (the losses will not match an uninterrupted run exactly)", flush=True)
    step_model = model
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        step_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if args.compile:
        step_model = torch.compile(step_model)  # evaluations and samples use the plain model

    best = {"val_loss": float("inf")}
    last_saved_step = -1

    def meta(ev, final: bool) -> dict:
        return {
            "name": name, "command": command, "corpus": stats, "tokenizer": tok_info,
            "parameters": model.num_parameters(), "config": cfg.to_dict(),
            "training": {k: v for k, v in vars(tcfg).items()}, "batch_size": args.batch_size, "stride": stride,
            "init": "from " + start["path"] if start else args.init, "started_from": start, "seed": args.seed, "device": str(device),
            "torch": torch.__version__, "python": platform.python_version(), "license": LICENSE_NOTE,
            "steps": ev.step, "tokens_seen": ev.tokens_seen, "seconds": round(ev.elapsed_s, 1),
            "train_loss": ev.train_loss, "val_loss": ev.val_loss, "perplexity": ev.perplexity,
            "status": ev.status if final else "in progress", "reason": ev.reason,
        }

    log_file = open(args.log_json, "a") if args.log_json and dist.is_main else None
    final_ev = None
    best_state = None
    events = train_model(model, train_loader, val_loader, tcfg, tokenizer=tokenizer, device=device,
                         optimizer=optimizer, train_eval_loader=train_eval_loader, dist=dist,
                         step_model=step_model, resume=resume)
    for ev in events:
        final_ev = ev
        # Where rank 0 may save a resume state (its evaluations, the end), every rank hands
        # over its random generators: the same steps on all ranks (only rank 0's events
        # carry the evaluations), so the collective matches up.
        rng_states = (dist.rng_states() if args.out and ev.step > 0
                      and (ev.done or ev.step % tcfg.eval_interval == 0) else None)
        if not dist.is_main:
            continue
        if not ev.is_eval:
            if args.log_steps and ev.batch_loss is not None:
                print(f"step {ev.step:>6}/{ev.total_steps} | loss {ev.batch_loss:.6f} | "
                      f"{ev.tokens_per_s:,.0f} tok/s", flush=True)
                if log_file:
                    log_file.write(json.dumps(ev.to_dict()) + "\n")
                    log_file.flush()
            continue
        print(format_event(ev), flush=True)
        if log_file:
            log_file.write(json.dumps(ev.to_dict()) + "\n")
            log_file.flush()
        if args.out and ev.step > 0 and ev.status != "diverged":
            save_resume_state(args.out, model, optimizer,
                              {"step": ev.step, "epoch": ev.epoch - 1, "tokens_seen": ev.tokens_seen,  # the loop adds 1
                               "train_seconds": ev.tokens_seen / ev.tokens_per_s if ev.tokens_per_s else 0.0,
                               "command": command}, train_loader, rng_states)
        val = ev.val_loss if ev.val_loss is not None else ev.train_loss
        if ev.status != "diverged" and math.isfinite(val) and val < best["val_loss"]:
            best = {"val_loss": val, "event": ev}
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            if args.out and ev.step > 0 and (ev.done or ev.step - last_saved_step >= args.save_every):
                save_checkpoint(args.out, model, tokenizer, meta(ev, final=False), dtype=args.save_dtype)
                last_saved_step = ev.step
                print(f"saved {args.out} (step {ev.step}, val {val:.3f})", flush=True)
    if log_file:
        log_file.close()
    log(final_ev.reason)

    if dist.is_main and args.out and best_state is not None and best["event"].step > 0:
        # The saved model is the best by validation loss (the last one unless it overfitted).
        model.load_state_dict(best_state)
        ev = best["event"]
        info = meta(ev, final=True)
        model.eval()
        with torch.no_grad():  # the whole validation split, not just the eval batches
            full_val = calc_loss_loader(val_loader, model, device)
        info.update(val_loss_full=full_val, perplexity_full=math.exp(full_val) if math.isfinite(full_val) else None)
        info.update(status=final_ev.status, reason=final_ev.reason, total_steps_run=final_ev.step,
                    total_seconds=round(final_ev.elapsed_s, 1), best_step=ev.step,
                    samples=generate_samples(model.to("cpu"), tokenizer, seed=args.seed))
        save_checkpoint(args.out, model, tokenizer, info, dtype=args.save_dtype)
        print(f"saved {args.out}: step {ev.step}, train {ev.train_loss:.3f}, val {ev.val_loss:.3f} "
              f"(whole validation split {full_val:.3f}), perplexity {ev.perplexity:.1f}", flush=True)
        (Path(args.out) / "TRAINING.md").write_text(training_report(info), encoding="utf-8")
        for s in info["samples"]:
            print(json.dumps(s), flush=True)
    dist.barrier()  # every rank waits for rank 0's saving: one that leaves early can abort the teardown
    if dist.is_main and args.push_to_hub and args.out and Path(args.out).is_dir():
        from .export import push_from_cli

        if not push_from_cli(args.out, args.push_to_hub):
            return 1
    return 0 if final_ev.status != "diverged" else 1


if __name__ == "__main__":
    sys.exit(main())
