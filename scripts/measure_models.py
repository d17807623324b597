"""Score models in nats per character on the same texts, so different tokenizers compare.

    python scripts/measure_models.py pydoc-gpt /path/to/new-model --docs-val --english

--docs-val: the held-out documents of llm_core.doc_corpus (split by document).
--english: general English prose that is not documentation, from Debian's `fortunes` package
(apt-get install fortunes; literature, wisdom, people, science, ... — measured here, never
shipped). Each text is cut into non-overlapping windows of the model's context; every token
after the first of a window is scored, and its characters are counted from the decoded targets.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from llm_core.registry import load_model  # noqa: E402

FORTUNE_FILES = ("literature", "wisdom", "people", "science", "education", "food", "love", "work",
                 "fortunes", "platitudes", "men-women", "pets", "sports")


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


@torch.inference_mode()
def nats_per_char(bundle, text: str, max_windows: int = 400) -> tuple[float, float, int]:
    """(nats per character, loss per token, tokens scored)."""
    model, tok = bundle.model.eval(), bundle.tokenizer
    ids = tok.encode(text, allowed_special={"<|endoftext|>"}) if "allowed_special" in tok.encode.__code__.co_varnames else tok.encode(text)
    ctx = model.cfg.context_length
    nll, n_tok, n_chars = 0.0, 0, 0
    for w, start in enumerate(range(0, len(ids) - 1, ctx)):
        if w >= max_windows:
            break
        chunk = ids[start:start + ctx + 1]
        if len(chunk) < 2:
            break
        x = torch.tensor([chunk[:-1]])
        y = torch.tensor(chunk[1:])
        logits = model(x)[0]
        nll += torch.nn.functional.cross_entropy(logits, y, reduction="sum").item()
        n_tok += len(y)
        n_chars += len(tok.decode(chunk[1:]))
    return nll / n_chars, nll / n_tok, n_tok


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+")
    p.add_argument("--docs-val", action="store_true")
    p.add_argument("--english", action="store_true")
    args = p.parse_args(argv)
    texts = {}
    if args.docs_val:
        from llm_core.doc_corpus import doc_corpus_texts
        texts["held-out documentation"] = doc_corpus_texts()[1]
    if args.english:
        texts["general English (fortunes)"] = english_text()
    print("| model | text | nats/char | loss/token | tokens |\n|---|---|---:|---:|---:|")
    for name in args.models:
        bundle = load_model(name)
        for label, text in texts.items():
            npc, lpt, n = nats_per_char(bundle, text)
            print(f"| {name} | {label} | {npc:.3f} | {lpt:.3f} (ppl {math.exp(lpt):,.0f}) | {n:,} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
