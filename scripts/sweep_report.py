"""Tables and a curve plot for a sweep of short pre-training runs, as markdown and SVG.

    python scripts/sweep_report.py /work/runs/sweep/{A,B,C,D} --measured sweep.json --svg docs/sweep.svg

Each RUN is a ``python -m llm_core.pretrain --out RUN --log-json RUN.jsonl`` folder; --measured is
``scripts/measure_models.py --json`` on the same folders (nats per character on held-out text).
The curve's y axis is validation loss per character, estimated as the eval batches' loss per token
times the run's validation tokens per validation character (so vocabularies compare); its x axis
is wall time, the budget the sweep holds equal. No plotting library: the SVG is written here.
"""
from __future__ import annotations

import argparse
import json
import sys
from html import escape
from pathlib import Path

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def load_run(folder: Path) -> dict:
    config = json.loads((folder / "config.json").read_text())
    meta = config["llm_explorer"]["meta"]
    log = folder.with_name(folder.name + ".jsonl")
    evals = [e for e in map(json.loads, log.read_text().splitlines()) if e.get("is_eval")]
    corpus = meta["corpus"]
    val_chars = corpus["characters"] - int(corpus["train_ratio"] * corpus["characters"])
    return {"name": folder.name, "meta": meta, "evals": evals,
            "tokens_per_char": corpus["val_tokens"] / val_chars,
            "mb": (folder / "model.safetensors").stat().st_size / 1e6}


def shape(meta: dict) -> str:
    c = meta["config"]
    return f"{c['n_layers']} layers, {c['n_heads']} heads, {c['emb_dim']} dims, vocab {c['vocab_size']:,}"


def summary_table(runs: list[dict], measured: list[dict]) -> str:
    score = {(Path(r["model"]).name, r["text"]): r["nats_per_char"] for r in measured if r["precision"] == "fp32"}
    lines = ["| run | shape | parameters | MB fp32 | tokens/s | steps | tokens seen | val loss/token "
             "(whole split) | nats/char held-out docs | nats/char fortunes |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        m = r["meta"]
        per_char = [score.get((r["name"], t)) for t in ("held-out documentation", "general English (fortunes)")]
        lines.append(f"| {r['name']} | {shape(m)} | {m['parameters']:,} | {r['mb']:.1f} | "
                     f"{m['tokens_seen'] / m['seconds']:,.0f} | {m['steps']} | {m['tokens_seen']:,} | "
                     f"{m['val_loss_full']:.3f} | " + " | ".join(f"{x:.3f}" if x else "" for x in per_char) + " |")
    return "\n".join(lines)


def curve_table(runs: list[dict]) -> str:
    """Validation loss per token (the eval batches) at each evaluation, one column per run."""
    steps = sorted({e["step"] for r in runs for e in r["evals"]})
    by_run = [{e["step"]: e for e in r["evals"]} for r in runs]
    lines = ["| step | " + " | ".join(f"{r['name']}: val loss/token (min)" for r in runs) + " |",
             "|---:|" + "---:|" * len(runs)]
    for s in steps:
        cells = []
        for evs in by_run:
            e = evs.get(s)
            cells.append(f"{e['val_loss']:.3f} ({e['elapsed_s'] / 60:.1f})" if e else "")
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def svg_plot(runs: list[dict], width: int = 640, height: int = 360) -> str:
    left, right, top, bottom = 60, 150, 20, 45
    pts = [[(e["elapsed_s"] / 60, e["val_loss"] * r["tokens_per_char"]) for e in r["evals"]] for r in runs]
    xmax = max(x for p in pts for x, _ in p)
    ys = [y for p in pts for _, y in p[1:]]  # the untrained first point would squash the rest
    ymin, ymax = min(ys) * 0.97, max(ys) * 1.02
    sx = lambda x: left + (width - left - right) * x / xmax  # noqa: E731
    sy = lambda y: top + (height - top - bottom) * (ymax - min(max(y, ymin), ymax)) / (ymax - ymin)  # noqa: E731
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>']
    for i in range(6):
        y = ymin + (ymax - ymin) * i / 5
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" stroke="#ddd"/>'
                   f'<text x="{left - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{y:.2f}</text>')
    for m in range(int(xmax) + 1):
        out.append(f'<text x="{sx(m):.1f}" y="{height - bottom + 16}" text-anchor="middle">{m}</text>')
    out.append(f'<text x="{(left + width - right) / 2}" y="{height - 8}" text-anchor="middle">wall time '
               '(minutes)</text>')
    out.append(f'<text x="14" y="{(top + height - bottom) / 2}" text-anchor="middle" '
               f'transform="rotate(-90 14 {(top + height - bottom) / 2})">val loss per character (nats, est.)</text>')
    for i, (r, p) in enumerate(zip(runs, pts)):
        colour = COLOURS[i % len(COLOURS)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in p[1:])
        out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{path}"/>')
        ly = top + 16 * (i + 1)
        out.append(f'<line x1="{width - right + 10}" x2="{width - right + 30}" y1="{ly}" y2="{ly}" '
                   f'stroke="{colour}" stroke-width="2"/><text x="{width - right + 35}" y="{ly + 4}">'
                   f'{escape(r["name"])}: {r["meta"]["config"]["n_layers"]}L {r["meta"]["config"]["emb_dim"]}d '
                   f'v{r["meta"]["config"]["vocab_size"]}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--measured", type=Path, help="scripts/measure_models.py --json output for the runs")
    p.add_argument("--svg", type=Path, help="write the curves here")
    args = p.parse_args(argv)
    runs = [load_run(f) for f in args.runs]
    measured = json.loads(args.measured.read_text()) if args.measured else []
    print(summary_table(runs, measured))
    print()
    print(curve_table(runs))
    if args.svg:
        args.svg.parent.mkdir(parents=True, exist_ok=True)
        args.svg.write_text(svg_plot(runs), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
