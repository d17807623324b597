"""Produce the shipped instruction-tuned model: tune a base model on the built-in
instruction set with the project's own fine-tuning loop and save it as a full checkpoint.

    python -m llm_core.instruct_tune --model pydoc-gpt --out assets/models/pydoc-gpt-instruct

Uses CUDA when present. Before and after tuning the same held-out entries are measured:
the loss on the whole validation split (the book's 5 %), exact match on the computed tasks
of the test split (string/list/number answers the program knows), exact match on the
documentation questions with one right answer, and word-level similarity on the rest.
The checkpoint's meta records the command, the time it took and these numbers.

Under ``torchrun --nproc_per_node N`` (DDP, gloo on CPUs, NCCL on GPUs) each process trains on
its share of every global batch (``--batch-size``); rank 0 alone measures, logs and saves.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time

import torch
from torch.utils.data import DataLoader

from .checkpoint import save_checkpoint
from .distributed import DistContext
from .finetune import MAX_SECONDS, FinetuneSettings, finetune, pad_id_of, score_responses
from .instruct_data import (
    InstructionDataset, doc_tasks, builtin_instructions, instruction_collate, rehearsal_sections, split_instructions,
    stdlib_docs,
)
from .lora import unwrap_lora
from .pretrain import LICENSE_NOTE
from .registry import load_model
from .training import calc_loss_loader, pick_device


def held_out_sets(data, n_computed: int, n_doc: int) -> dict[str, list[dict]]:
    """The test split's computed tasks, exact-answer doc questions and free-text doc questions."""
    doc_keys = {(e["instruction"], e["input"]) for e in doc_tasks(stdlib_docs())}
    _, test, val = split_instructions(data.entries)
    computed = [e for e in test if (e["instruction"], e["input"]) not in doc_keys and e.get("kind") != "assistant"]
    doc = [e for e in test if (e["instruction"], e["input"]) in doc_keys]
    return {"val": val,
            "computed": computed[:n_computed],
            "doc_exact": [e for e in doc if e.get("check") == "exact"][:n_doc],
            "doc_similar": [e for e in doc if e.get("check") != "exact"][:n_doc],
            "assistant": [e for e in test if e.get("kind") == "assistant"]}


@torch.no_grad()
def measure(model, tokenizer, sets: dict[str, list[dict]], max_new_tokens: int, batch_size: int) -> dict:
    """Validation loss on the whole split and the held-out scores, plus the answers given."""
    model.eval()
    device = model.tok_emb.weight.device
    collate = instruction_collate(pad_id_of(tokenizer), model.cfg.context_length, mask_prompt=False)
    loader = DataLoader(InstructionDataset(sets["val"], tokenizer), batch_size=batch_size, shuffle=False,
                        collate_fn=collate)
    out = {"val_loss": calc_loss_loader(loader, model, device), "n_val": len(sets["val"])}
    answers = {}
    for key in ("computed", "doc_exact", "doc_similar", "assistant"):
        if not sets.get(key):
            continue
        scores, answers[key] = score_responses(model, tokenizer, sets[key], max_new_tokens)
        out[key] = scores["exact_match"] if key != "doc_similar" else scores["similarity"]
        out["n_" + key] = scores["n"]
    return out, answers


def set_dropout(model: torch.nn.Module, p: float) -> None:
    """Every dropout of the model (embeddings, attention weights, residual branches) at rate p.
    Only training mode drops; the saved config keeps the base's rate, which inference ignores."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = p


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m llm_core.instruct_tune", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="pydoc-gpt", help="base model name")
    p.add_argument("--out", required=True, help="checkpoint directory to write (Hugging Face's GPT-2 layout)")
    p.add_argument("--push-to-hub", metavar="REPO", help="then upload it to this Hub repo")
    p.add_argument("--save-dtype", choices=("fp32", "fp16", "bf16"), default="fp32",
                   help="store the weights in this precision (fp16/bf16: half the bytes; they load as fp32)")
    p.add_argument("--name", default=None, help="name recorded in the meta (default: the out dir's name)")
    p.add_argument("--method", choices=("full", "lora"), default="full")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--alpha", type=float, default=32.0)
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--cosine", action="store_true", help="decay the lr to lr/10 by the end (steps or time)")
    p.add_argument("--eval-interval", type=int, default=100)
    p.add_argument("--eval-batches", type=int, default=10)
    p.add_argument("--n-computed", type=int, default=150, help="held-out computed tasks scored before vs after")
    p.add_argument("--n-doc", type=int, default=50, help="held-out documentation questions of each kind scored")
    p.add_argument("--answer-tokens", type=int, default=32, help="max new tokens per scored answer")
    p.add_argument("--mask-instruction", action="store_true", help="loss on the response only")
    p.add_argument("--rehearse", type=float, default=0.0, metavar="SHARE",
                   help="also replay this many standard-library sections of the pre-training corpus per "
                        "training entry (plain text, loss on every token), so tuning keeps what pre-training "
                        "stored (0: none)")
    p.add_argument("--dropout", type=float, default=0.0, metavar="P",
                   help="dropout rate while tuning (the base was pre-trained without; 0: none)")
    p.add_argument("--max-minutes", type=float, default=8.0, help="time limit for the training steps")
    p.add_argument("--threads", type=int)
    p.add_argument("--seed", type=int, default=123)
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    args = p.parse_args(argv)
    if not 0.0 <= args.dropout < 1.0:
        p.error("--dropout must be in [0, 1)")
    if args.threads:
        torch.set_num_threads(args.threads)
    dist = DistContext.from_env(pick_device(args.device))
    try:
        _run(args, argv, dist)
    finally:
        dist.close()


def _run(args, argv, dist: DistContext) -> None:
    command = "python -m llm_core.instruct_tune " + " ".join(sys.argv[1:] if argv is None else argv)
    device = dist.device(pick_device(args.device))
    bundle = load_model(args.model)
    set_dropout(bundle.model, args.dropout)
    data = builtin_instructions()
    if args.rehearse:  # a copy: builtin_instructions() is cached and shared
        data = dataclasses.replace(data, rehearsal=rehearsal_sections())
    sets = held_out_sets(data, args.n_computed, args.n_doc)
    settings = FinetuneSettings(task="instruction", method=args.method, rank=args.rank, alpha=args.alpha,
                                epochs=args.epochs, max_steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                                cosine=args.cosine, eval_interval=args.eval_interval, eval_batches=args.eval_batches, seed=args.seed,
                                max_seconds=min(args.max_minutes * 60, MAX_SECONDS),
                                mask_instruction=args.mask_instruction, rehearsal=args.rehearse,
                                n_score=0, n_samples=2)
    procs = f" × {dist.world_size} processes ({dist.backend})" if dist.enabled else ""
    started = time.time()
    if dist.is_main:
        print(f"{bundle.summary()}\n{data.description}\ndevice {device}{procs}", flush=True)
        base = bundle.model if device.type == "cpu" else __import__("copy").deepcopy(bundle.model).to(device)
        before, before_answers = measure(base, bundle.tokenizer, sets, args.answer_tokens, args.batch_size)
        print("before:", json.dumps(before), f"({time.time() - started:.0f} s)", flush=True)
    train_started = time.time()
    last = None
    for ev in finetune(bundle.model, bundle.tokenizer, data, settings, base_name=bundle.name, device=device,
                       dist=dist):
        last = ev
        if ev.is_eval and dist.is_main:
            print(f"step {ev.step:5d} train {ev.train_loss:.4f} val {ev.val_loss:.4f} "
                  f"{ev.tokens_per_s:,.0f} tok/s {ev.elapsed_s:,.0f} s", flush=True)
    if not dist.is_main:
        dist.barrier()  # wait for rank 0's measuring and saving (see finetune._run_cli)
        return
    try:
        if last is None or last.result is None:
            raise SystemExit(f"no result: {last.reason if last else 'no events'}")
        train_seconds = time.time() - train_started
        res = last.result
        model = res.model
        if args.method == "lora":  # a plain GPTModel checkpoint: fold the updates in, back to nn.Linear
            unwrap_lora(model)
        after, after_answers = measure(model, bundle.tokenizer, sets, args.answer_tokens, args.batch_size)
        print("after: ", json.dumps(after), flush=True)
        examples = []
        for key in ("computed", "doc_exact", "doc_similar", "assistant"):
            if key not in after_answers:
                continue
            for e, b, a in list(zip(sets[key], before_answers[key], after_answers[key]))[:6]:
                examples.append({"kind": key, "instruction": e["instruction"], "input": e["input"],
                                 "expected": e["output"], "before": b, "after": a})
        meta = {
            "name": args.name or args.out.rstrip("/").split("/")[-1],
            "base_model": bundle.name,
            "command": command,
            "method": args.method,
            "rank": args.rank if args.method == "lora" else None,
            "alpha": args.alpha if args.method == "lora" else None,
            "status": last.status, "reason": last.reason,
            "steps": res.info.extra.get("steps"),
            "examples_seen": res.info.extra.get("steps", 0) * args.batch_size,
            "train_seconds": round(train_seconds, 1),
            "seconds": round(time.time() - started, 1),
            "device": str(device), "torch": torch.__version__, "python": platform.python_version(),
            "threads": torch.get_num_threads(),
            "data": data.description,
            "rehearsal": args.rehearse,
            "dropout": args.dropout,
            "license": LICENSE_NOTE,
            "before": before, "after": after,
            "examples": examples,
            "curve": [{k: h[k] for k in ("step", "train_loss", "val_loss")} for h in res.history],
        }
        save_checkpoint(args.out, model.to("cpu").eval(), bundle.tokenizer, meta, dtype=args.save_dtype)
        print(json.dumps({k: meta[k] for k in ("status", "steps", "train_seconds", "seconds", "before", "after")},
                         indent=2))
        print(f"written to {args.out}")
        if args.push_to_hub:
            from .export import push_from_cli

            if not push_from_cli(args.out, args.push_to_hub):
                raise SystemExit(1)
    finally:
        dist.barrier()


if __name__ == "__main__":
    main()
