"""Score models in nats per character on the same texts, so different tokenizers compare.

    python scripts/measure_models.py pydoc-gpt /path/to/new-model --docs-val --english
    python scripts/measure_models.py /work/runs/docs-gpt --held-out-of /work/runs/docs-corpus.txt \\
        --train-ratio 0.9492893 --english --precision fp32 fp16 bf16

--docs-val: the held-out documents of llm_core.doc_corpus (split by document).
--held-out-of FILE --train-ratio R: the validation part of a pre-training text file, split as
``python -m llm_core.pretrain --text-file FILE --train-ratio R`` splits it.
--english: general English prose that is not documentation, from Debian's `fortunes` package
(apt-get install fortunes; literature, wisdom, people, science, ... — measured here, never
shipped).
--precision: also score each model with its weights rounded through fp16 / bf16 and back to
fp32 (what storing the checkpoint in that precision would cost).

Every model scores the same characters: each text is cut to its first --max-chars characters
first, then into non-overlapping windows of the model's context; every token after the first of a
window is scored, and its characters are counted from the decoded targets.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from llm_core.registry import load_model  # noqa: E402

FORTUNE_FILES = ("literature", "wisdom", "people", "science", "education", "food", "love", "work",
                 "fortunes", "platitudes", "men-women", "pets", "sports")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def english_text(max_chars: int = 300_000) -> str:
    root = Path("/usr/share/games/fortunes")
    parts = []
    for name in FORTUNE_FILES:
        f = root / name
        if f.is_file():
            parts += [p.strip() for p in f.read_text(encoding="utf-8", errors="replace").split("\n%\n") if p.strip()]
    if not parts:
        raise SystemExit("no fortunes found: apt-get install fortunes")
    return "\n\n".join(parts)[:max_chars]


def held_out_of(path: str, train_ratio: float) -> str:
    from llm_core.corpus import train_val_split
    return train_val_split(Path(path).read_text(encoding="utf-8"), train_ratio)[1]


def rounded_through(model: torch.nn.Module, precision: str) -> torch.nn.Module:
    """A copy of ``model`` whose floating-point weights went to ``precision`` and back to fp32."""
    if precision == "fp32":
        return model
    twin = copy.deepcopy(model)  # the loaded model is shared (cached): never change it in place
    with torch.no_grad():
        for tensor in list(twin.parameters()) + list(twin.buffers()):
            if tensor.is_floating_point():
                tensor.copy_(tensor.to(DTYPES[precision]).float())
    return twin


@torch.inference_mode()
def nats_per_char(model, tok, text: str, max_windows: int | None = None) -> tuple[float, float, int]:
    """(nats per character, loss per token, tokens scored)."""
    model = model.eval()
    ids = tok.encode(text)  # as pretrain encodes it: a document separator is the end-of-text token
    ctx = model.cfg.context_length
    nll, n_tok, n_chars = 0.0, 0, 0
    for w, start in enumerate(range(0, len(ids) - 1, ctx)):
        if max_windows is not None and w >= max_windows:
            break
        chunk = ids[start:start + ctx + 1]
        if len(chunk) < 2:
            break
        x = torch.tensor([chunk[:-1]], device=model.device if hasattr(model, "device") else "cpu")
        y = torch.tensor(chunk[1:], device=x.device)
        logits = model(x)[0]
        nll += torch.nn.functional.cross_entropy(logits.float(), y, reduction="sum").item()
        n_tok += len(y)
        n_chars += len(tok.decode(chunk[1:]))
    return nll / n_chars, nll / n_tok, n_tok


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+")
    p.add_argument("--docs-val", action="store_true")
    p.add_argument("--held-out-of", metavar="FILE")
    p.add_argument("--train-ratio", type=float, default=0.9)
    p.add_argument("--english", action="store_true")
    p.add_argument("--max-chars", type=int, default=300_000, help="score this many characters of each text")
    p.add_argument("--precision", nargs="+", choices=list(DTYPES), default=["fp32"])
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--json", metavar="FILE", help="also write the results here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    texts = {}
    if args.docs_val:
        from llm_core.doc_corpus import doc_corpus_texts
        texts["held-out documentation"] = doc_corpus_texts()[1][:args.max_chars]
    if args.held_out_of:
        texts["held-out documentation"] = held_out_of(args.held_out_of, args.train_ratio)[:args.max_chars]
    if args.english:
        texts["general English (fortunes)"] = english_text(args.max_chars)
    if not texts:
        p.error("choose a text: --docs-val, --held-out-of FILE or --english")
    rows = []
    print("| model | weights | text | characters | nats/char | loss/token | tokens |\n"
          "|---|---|---|---:|---:|---:|---:|")
    for name in args.models:
        bundle = load_model(name)
        for precision in args.precision:
            model = rounded_through(bundle.model, precision)
            for label, text in texts.items():
                npc, lpt, n = nats_per_char(model, bundle.tokenizer, text)
                rows.append({"model": name, "precision": precision, "text": label, "chars": len(text),
                             "nats_per_char": npc, "loss_per_token": lpt, "tokens": n})
                print(f"| {name} | {precision} | {label} | {len(text):,} | {npc:.4f} | "
                      f"{lpt:.4f} (ppl {math.exp(lpt):,.0f}) | {n:,} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
