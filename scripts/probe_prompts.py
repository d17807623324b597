"""Measure the prompts the tabs offer, on the shipped models, through the tabs' own code.

    python scripts/probe_prompts.py generate                 # Generate's examples (+ --prompts to try others)
    python scripts/probe_prompts.py chat                     # Chat's example lists, greedy
    python scripts/probe_prompts.py pretrain --steps 600     # Pretrain's default run: its live samples
    python scripts/probe_prompts.py attention                # README's worked example (interventions)

The tabs quote what the models say; this prints it, so the quotes are measured, not hoped for.
Generate: each example row's settings and seed, with how repetitive the text is (share of
repeated word 3-grams) and how much of it is blank lines. Chat: each example as the first
message of a fresh conversation, greedy, as the tab answers it. Pretrain: the tab's default
run (corpus, tokenizer, size, batch, lr, evaluation interval) and the live
samples it would show for each prompt every 100 steps (one run: the first prompt is the one the
run is configured with). Attention: the numbers README's worked example quotes (the
Attention tab's default prompt on the model, its most important head by ablation, that head's
direct logit attribution, and activation patching on the Architecture tab's prompt pair).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def repetition(text: str) -> float:
    """Share of word 3-grams that already occurred earlier in the text (0: none repeated)."""
    words = text.split()
    grams = [tuple(words[i:i + 3]) for i in range(len(words) - 2)]
    if not grams:
        return 0.0
    seen, repeated = set(), 0
    for g in grams:
        repeated += g in seen
        seen.add(g)
    return repeated / len(grams)


def blank_share(text: str) -> float:
    """Share of the text's lines that are empty (a collapsed model writes newlines)."""
    lines = text.split("\n")
    return sum(not line.strip() for line in lines) / len(lines)


def probe_generate(model_name: str, prompts: list[str]) -> None:
    from tabs import generate as gen_tab
    rows = [list(r) for r in gen_tab.EXAMPLES]
    rows += [[p, *rows[1][1:]] for p in prompts]  # extra prompts at the Top-k + top-p row's settings
    for prompt, temperature, top_k, top_p, max_new, seed in rows:
        run = None
        for out in gen_tab.generate_text(prompt, temperature, top_k, top_p, max_new, seed, True, True, model_name):
            run = out[-1]
        text = gen_tab.run_text(run, gen_tab.decoding_bundle(model_name).tokenizer)
        new = text[len(prompt):]
        print(f"## {prompt!r}  T={temperature} k={top_k} p={top_p} seed={seed}")
        print(f"repeated 3-grams {repetition(new):.0%}, blank lines {blank_share(new):.0%}, {run['end']}")
        print(text)
        print()


def probe_chat(model_name: str, extra: list[str] = ()) -> None:
    from llm_core.chat import converse
    from llm_core.generation import SamplingSettings
    from tabs import chat as chat_tab
    from tabs.common import get_bundle
    bundle = get_bundle(model_name)
    settings = SamplingSettings(temperature=0.0, max_new_tokens=chat_tab.DEFAULT_MAX_NEW_TOKENS)
    tried = [m.split("|", 1) if "|" in m else [m, ""] for m in extra]
    for label, rows in (("good", chat_tab.GOOD_EXAMPLES), ("bad", chat_tab.BAD_EXAMPLES), ("try", tried)):
        for message, input_text in rows:  # each in a fresh conversation, as an example click starts one
            turn, = converse(bundle.model, bundle.tokenizer, [message], settings, inputs=[input_text])
            print(f"[{label}] {message} | {input_text} -> {turn.answer!r}")


def probe_pretrain(steps: int, prompts: list[str], temperatures: list[float]) -> None:
    """One run of the tab's defaults; every 100 steps each prompt's live sample at each temperature
    (0: greedy; above, from a generator seeded as the tab's run seeds it)."""
    import torch

    from llm_core.registry import builtin_names
    from llm_core.training import sample_text, train_model
    from tabs import pretrain as pt
    d = pt.DEFAULTS
    tokenizer, cfg, train_loader, val_loader, *_ = pt._prepare(
        pt.CORPUS_BUILTIN, None, "", pt.TOK_BUILTIN if builtin_names() else pt.TOK_GPT2, d["size"], d["layers"],
        d["heads"], d["dims"], d["context"], d["batch_size"])
    model = pt._build(cfg, d["seed"], training=True)
    tcfg = pt.train_config(steps, d["lr"], d["warmup"], d["cosine"], d["eval_interval"], d["seed"], prompts[0])
    for ev in train_model(model, train_loader, val_loader, tcfg, tokenizer=tokenizer):
        if not (ev.is_eval and (ev.step % 100 == 0 or ev.done)):
            continue
        print(f"## step {ev.step}, validation loss {ev.val_loss:.3f}")
        was_training = model.training
        model.eval()
        for prompt in prompts:
            for t in temperatures:
                gen = torch.Generator().manual_seed(tcfg.seed)
                text = sample_text(model, tokenizer, prompt, pt.SAMPLE_TOKENS, t, gen)
                print(f"{prompt!r} T={t:g}: blank lines {blank_share(text):.0%}, repeated 3-grams "
                      f"{repetition(text):.0%}: {text!r}")
        model.train(was_training)


def probe_attention(model_name: str) -> None:
    import torch

    from llm_core import interventions as iv
    from llm_core.examples import pick_example
    from tabs.architecture import PATCH_PAIRS
    from tabs.attention import DEFAULT_PROMPTS
    from tabs.common import get_bundle
    bundle = get_bundle(model_name)
    model, tok = bundle.model, bundle.tokenizer
    piece = lambda t: repr(tok.decode([t]))  # noqa: E731
    prompt = pick_example(tok, DEFAULT_PROMPTS)
    ids = tok.encode(prompt)
    with torch.inference_mode():
        trace = model.run_with_trace(torch.tensor([ids]))
    probs = trace["logits"][0, -1].float().softmax(-1)
    top = probs.topk(3)
    target = int(top.indices[0])
    print(f"prompt {prompt!r}: top next tokens " + ", ".join(
        f"{piece(int(i))} {float(p):.1%}" for p, i in zip(top.values, top.indices)))
    att = iv.head_attribution(bundle, ids, target)
    flat = int(att.delta.argmin())
    layer, head = divmod(flat, att.delta.shape[1])
    print(f"most important head by ablation: layer {layer} head {head}, "
          f"delta log p({piece(target)}) {float(att.delta[layer, head]):+.2f}")
    knocked = iv.ablate_heads(bundle, ids, [(layer, head)])[0, -1].float().softmax(-1)
    k_top = int(knocked.argmax())
    print(f"knocked out: p({piece(target)}) {float(knocked[target]):.1%}, top {piece(k_top)} {float(knocked[k_top]):.1%}")
    dla = iv.direct_logit_attribution(model, trace, target)
    d_flat = int(dla.heads.argmax())
    d_layer, d_head = divmod(d_flat, dla.heads.shape[1])
    print(f"direct logit attribution: that head {float(dla.heads[layer, head]):+.2f}, layer {layer} MLP "
          f"{float(dla.mlp[layer]):+.2f}, the largest MLP layer {int(dla.mlp.argmax())} "
          f"{float(dla.mlp.max()):+.2f}, the largest head layer {d_layer} head {d_head} {float(dla.heads.max()):+.2f}")
    for clean, corrupt in PATCH_PAIRS:
        c_ids, x_ids = tok.encode(clean), tok.encode(corrupt)
        if len(c_ids) != len(x_ids):
            continue
        with torch.inference_mode():
            c_tok = int(model(torch.tensor([c_ids]))[0, -1].argmax())
            x_tok = int(model(torch.tensor([x_ids]))[0, -1].argmax())
        if c_tok == x_tok:
            continue
        pm = iv.patching_map(bundle, c_ids, x_ids, c_tok, x_tok)
        print(f"patching {clean!r} ({piece(c_tok)}) into {corrupt!r} ({piece(x_tok)}), share restored per "
              f"layer and position:")
        for li, row in enumerate(pm.restored):
            print(f"  layer {li}: " + " ".join(f"{float(v):4.0%}" for v in row))
        break


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    g = sub.add_parser("generate")
    g.add_argument("--model", default="pydoc-gpt")
    g.add_argument("--prompts", nargs="*", default=[])
    c = sub.add_parser("chat")
    c.add_argument("--model", default="pydoc-gpt-instruct")
    c.add_argument("--messages", nargs="*", default=[], help='more to try: "message" or "message|input"')
    t = sub.add_parser("pretrain")
    t.add_argument("--steps", type=int, default=600)
    t.add_argument("--prompts", nargs="+", default=None, help="default: the tab's sample prompt")
    t.add_argument("--temperatures", type=float, nargs="+", default=[0.0])
    a = sub.add_parser("attention")
    a.add_argument("--model", default="pydoc-gpt")
    for s in (g, c, t, a):
        s.add_argument("--threads", type=int, help="torch CPU threads")
    args = p.parse_args(argv)
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.what == "generate":
        probe_generate(args.model, args.prompts)
    elif args.what == "chat":
        probe_chat(args.model, args.messages)
    elif args.what == "attention":
        probe_attention(args.model)
    else:
        from tabs import pretrain as pt
        probe_pretrain(args.steps, args.prompts or [pt.DEFAULT_SAMPLE_PROMPT], args.temperatures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
