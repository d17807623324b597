"""Score chat models on the held-out instruction entries, as llm_core.instruct_tune measures them.

    python scripts/score_instruct.py pydoc-gpt-instruct /path/to/run        # first 50 and the whole test split
    python scripts/score_instruct.py pydoc-gpt pydoc-gpt-instruct OLD_RUN --fair-with d62e5ab e7cde67

A change to the built-in instruction set reshuffles its 85/10/5 split, so a model tuned on an
older set may have trained on today's test entries. ``--fair-with COMMIT…`` scores on today's
held-out entries minus every entry of those commits' training splits (each read with that commit's
own code, from a temporary git worktree): entries no model tuned on any of the sets has seen.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DUMP_TRAIN_SPLIT = ("import json, sys; from llm_core.instruct_data import builtin_instructions, split_instructions; "
                    "train = split_instructions(builtin_instructions().entries)[0]; "
                    "json.dump([[e['instruction'], e['input']] for e in train], sys.stdout)")


def train_split_at(commit: str) -> set[tuple[str, str]]:
    """(instruction, input) of every training entry of the built-in set as it was at commit."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), commit], check=True)
        try:
            out = subprocess.run([sys.executable, "-c", DUMP_TRAIN_SPLIT], cwd=tree, check=True,
                                 capture_output=True, text=True).stdout
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=True)
    return {tuple(pair) for pair in json.loads(out)}


def unseen_sets(data, seen: set[tuple[str, str]]) -> dict[str, list[dict]]:
    """Every held-out set of instruct_tune, whole, minus the entries in seen."""
    from llm_core.instruct_tune import held_out_sets

    sets = held_out_sets(data, 10_000, 10_000)
    return {k: [e for e in v if (e["instruction"], e["input"]) not in seen] for k, v in sets.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", help="built-in names or saved models' folders")
    p.add_argument("--fair-with", metavar="COMMIT", nargs="+",
                   help="leave out the training entries of the set at each of these commits")
    p.add_argument("--n-doc", type=int, nargs="+", default=[50, 10_000],
                   help="documentation questions of each kind to score (the CLI's 50; 10000: all)")
    p.add_argument("--n-computed", type=int, default=150)
    p.add_argument("--answer-tokens", type=int, default=32)
    p.add_argument("--threads", type=int)
    args = p.parse_args(argv)
    import torch

    from llm_core.instruct_data import builtin_instructions
    from llm_core.instruct_tune import held_out_sets, measure
    from llm_core.registry import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    data = builtin_instructions()
    if args.fair_with:
        seen = set().union(*(train_split_at(commit) for commit in args.fair_with))
        runs = [(f"not trained at {' '.join(args.fair_with)}", unseen_sets(data, seen))]
    else:
        runs = [(n, held_out_sets(data, args.n_computed, n)) for n in args.n_doc]
    for name in args.models:
        bundle = load_model(name)
        for label, sets in runs:
            scores, _ = measure(bundle.model, bundle.tokenizer, sets, args.answer_tokens, 16)
            print(json.dumps({"model": name, "sets": label, **scores}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
