"""The first messages a demo audience types, through the Chat tab's own code, as markdown.

    python scripts/demo_conversation.py                       # the shipped pydoc-gpt-instruct
    python scripts/demo_conversation.py --model /path/to/run --max-new-tokens 64

Each message goes through llm_core.chat exactly as the Chat tab sends it: the conversation so
far becomes one prompt (oldest turns dropped when it outgrows the context), the answer ends at
end-of-text or a new ``###`` section, and an empty answer is fed back as the tab's "(no answer…)"
notice. Two conversations are printed: greedy (the tab's default) and sampled with a fixed seed
(the tab's seed box: every message is sampled from a fresh generator with that seed). The output
is markdown meant to be pasted verbatim into TRAINING.md.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from llm_core.chat import NO_ANSWER, Turn, converse  # noqa: E402
from llm_core.generation import SamplingSettings, prepare_for_decoding  # noqa: E402

# Greeting and identity, a documented function, a how-to, a follow-up that only makes sense with
# the turn before it, and an off-topic question the model should decline honestly.
DEMO_MESSAGES = (
    "Hello! Who are you?",
    "What does len() do?",
    "How do I sort a list in Python?",
    "And in reverse order?",
    "What is the capital of France?",
)
CHAT_MAX_NEW_TOKENS = 48  # the Chat tab's default
CHAT_SEED = 123           # the Chat tab's default seed


def markdown(label: str, turns: list[Turn], title: str) -> str:
    lines = [f"**{title}**", "", "```text"]
    for t in turns:
        lines += [f"You: {t.message}", f"{label}: {t.answer or NO_ANSWER}", ""]
    lines[-1] = "```"
    lines += ["", "| turn | prompt tokens | answer tokens | ended by the model | earlier turns dropped |",
              "|---:|---:|---:|---|---:|"]
    for i, t in enumerate(turns, 1):
        lines.append(f"| {i} | {t.prompt_tokens} of {t.context_length} | {t.tokens} | "
                     f"{'yes' if t.ended else 'no (length limit)'} | {t.dropped_turns} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="pydoc-gpt-instruct", help="a built-in name or a saved model's folder")
    p.add_argument("--messages", nargs="+", default=list(DEMO_MESSAGES))
    p.add_argument("--max-new-tokens", type=int, default=CHAT_MAX_NEW_TOKENS)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-k", type=int, default=40)
    p.add_argument("--seed", type=int, default=CHAT_SEED)
    p.add_argument("--threads", type=int, help="torch CPU threads")
    args = p.parse_args(argv)
    import torch

    from llm_core.registry import load_model
    if args.threads:
        torch.set_num_threads(args.threads)
    bundle = load_model(args.model)
    prepare_for_decoding(bundle.model)  # as the Chat tab does for the shared models
    model, tok = bundle.for_precision("fp32"), bundle.tokenizer
    label = Path(args.model).name if Path(args.model).is_dir() else args.model
    greedy = SamplingSettings(temperature=0.0, max_new_tokens=args.max_new_tokens)
    sampled = SamplingSettings(temperature=args.temperature, top_k=min(args.top_k, tok.n_vocab) or None,
                               max_new_tokens=args.max_new_tokens)
    print(markdown(label, converse(model, tok, args.messages, greedy, args.seed),
                   f"{label}, greedy (temperature 0), up to {args.max_new_tokens} new tokens:"))
    print()
    print(markdown(label, converse(model, tok, args.messages, sampled, args.seed),
                   f"{label}, sampled: temperature {args.temperature:g}, top-k {args.top_k}, seed {args.seed} "
                   f"(each message from a fresh generator with that seed, as the Chat tab's seed box), "
                   f"up to {args.max_new_tokens} new tokens:"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
