"""Export any model the app can load into Hugging Face's GPT-2 layout, and push it to the Hub.

    python -m llm_core.export pydoc-gpt out/pydoc-gpt
    python -m llm_core.export saved:my-run out/my-run --push-to-hub USER/my-run   # token: HF_TOKEN
    python -m llm_core.export /path/to/run out/run-fp16 --dtype fp16   # half the bytes on disk

``AutoModelForCausalLM.from_pretrained(out_dir)`` and ``AutoTokenizer.from_pretrained(out_dir)``
open the result unchanged (see ``hf_format`` for the files). A LoRA-wrapped model is exported
with its update merged into the weights, so a fine-tuned model exports like any other.
"""
from __future__ import annotations

import copy
import os
import re
import shutil
import sys
import zipfile
from pathlib import Path

import torch

from .checkpoint import HubUnavailable, hub_reachable, save_checkpoint
from .files import atomic_dir
from .hf_format import CheckpointError

# Files the app shows beside a built-in checkpoint that an export carries along.
CARRIED = ("TRAINING.md",)


class HubPushError(RuntimeError):
    """A push that did not happen. ``reason`` is one line saying why, without server paths; the message
    adds where the local files stay."""

    def __init__(self, reason: str, folder: str | os.PathLike | None = None):
        self.reason = reason
        super().__init__(reason if folder is None else f"{reason}; the export is kept in {folder}")


# The Hub's repo ids: USER/NAME of letters, digits, ".", "_" and "-", 96 characters at most.
REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")


def valid_repo_id(repo_id: str) -> bool:
    return len(repo_id) <= 96 and REPO_ID.fullmatch(repo_id) is not None


def _merged_copy(model):
    from .lora import lora_layers, merge_lora

    if not lora_layers(model):
        return model
    return merge_lora(copy.deepcopy(model))


def export_hf(bundle, out_dir: str | os.PathLike, source_dir: str | os.PathLike | None = None,
              dtype: str = "fp32") -> Path:
    """Write ``bundle`` (a ``ModelBundle``) to ``out_dir`` in Hugging Face's GPT-2 layout.

    An existing ``out_dir`` is replaced atomically; ``source_dir`` (the checkpoint it was loaded
    from, if any) lends its TRAINING.md."""
    model = _merged_copy(bundle.model)
    if model.out_head.weight.shape[0] != model.cfg.vocab_size:
        raise CheckpointError("this model has a classification head, not a language-model head; export "
                              "it with llm_core.peft_format.export_classifier")
    meta = {k: v for k, v in (bundle.meta or {}).items() if k != "source"}
    meta.setdefault("name", Path(str(bundle.name)).name.removeprefix("saved:") or "model")
    out = save_checkpoint(out_dir, model, bundle.tokenizer, meta, dtype=dtype)
    if source_dir is not None:
        for name in CARRIED:
            if (Path(source_dir) / name).is_file() and not (out / name).exists():
                shutil.copy2(Path(source_dir) / name, out / name)
    return out


def export_classifier(model, tokenizer, out_dir: str | os.PathLike, labels: list[str], meta: dict | None = None) -> Path:
    """A fine-tuned classifier (new head, whole weights) as ``GPT2ForSequenceClassification``: its
    ``score`` has no bias, so ours is folded into the final LayerNorm (see ``peft_format``)."""
    import json

    from safetensors.torch import save_file

    from .checkpoint import write_model_dir
    from .hf_format import hf_state_dict
    from .peft_format import fold_head_bias_into_ln_f

    model = _merged_copy(model)  # never moved: it may be a shared model on a GPU
    head = model.out_head
    n = head.weight.shape[0]
    labels = [str(x) for x in labels] or [f"LABEL_{i}" for i in range(n)]
    if len(labels) != n:
        raise CheckpointError(f"{len(labels)} label names for a head with {n} classes")
    with atomic_dir(out_dir) as out:
        lm = copy.deepcopy(model)  # write_model_dir needs a language-model head: lend it the embedding
        lm.out_head = torch.nn.Linear(model.cfg.emb_dim, model.cfg.vocab_size, bias=False)
        lm.out_head.weight = lm.tok_emb.weight
        lm.cfg = lm.cfg.with_(tie_weights=True)
        write_model_dir(out, lm, tokenizer, meta, name=(meta or {}).get("name") or Path(out_dir).name)
        state = hf_state_dict(lm)
        state.pop("lm_head.weight", None)
        state["score.weight"] = head.weight.detach().float().cpu().contiguous()
        state["transformer.ln_f.weight"], state["transformer.ln_f.bias"] = fold_head_bias_into_ln_f(model)
        save_file({k: v.contiguous() for k, v in state.items()}, str(out / "model.safetensors"), metadata={"format": "pt"})
        config = json.loads((out / "config.json").read_text())
        config.update(architectures=["GPT2ForSequenceClassification"], num_labels=n, tie_word_embeddings=True,
                      id2label={str(i): lab for i, lab in enumerate(labels)},
                      label2id={lab: i for i, lab in enumerate(labels)})
        (out / "config.json").write_text(json.dumps(config, indent=2))
        card = (out / "README.md").read_text(encoding="utf-8")
        (out / "README.md").write_text(card.replace("pipeline_tag: text-generation", "pipeline_tag: text-classification")
                                       .replace("AutoModelForCausalLM", "AutoModelForSequenceClassification"),
                                       encoding="utf-8")
    return Path(out_dir)


def export_finetuned(model, tokenizer, info, out_dir: str | os.PathLike) -> Path:
    """A fine-tune's result in Hugging Face's formats: LoRA → a peft adapter directory; a
    last-block or full fine-tune → the whole tuned model (a classifier as
    GPT2ForSequenceClassification)."""
    from .peft_format import save_peft_adapter

    if info.method == "lora":
        return save_peft_adapter(out_dir, model, info)
    meta = {"base_model": info.base_model, "method": info.method, **{k: v for k, v in info.extra.items()
                                                                     if isinstance(v, (str, int, float))}}
    if info.head_classes is not None:
        return export_classifier(model, tokenizer, out_dir, list(info.extra.get("labels") or []), meta)
    return save_checkpoint(out_dir, _merged_copy(model), tokenizer, meta)


def zip_folder(folder: str | os.PathLike, zip_path: str | os.PathLike) -> Path:
    """``folder``'s files in a zip whose top directory is the folder's name."""
    folder, zip_path = Path(folder), Path(zip_path)
    with zipfile.ZipFile(zip_path, "w") as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file():  # weights barely compress: store them, deflate the text files
                kind = zipfile.ZIP_STORED if f.suffix == ".safetensors" else zipfile.ZIP_DEFLATED
                zf.write(f, Path(folder.name) / f.relative_to(folder), compress_type=kind)
    return zip_path


def resolve_token(token: str | None) -> str | None:
    token = (token or "").strip() or os.environ.get("HF_TOKEN", "").strip()
    if token:
        return token
    try:
        from huggingface_hub import get_token
        return get_token()
    except Exception:  # an unreadable token file is the same as no token
        return None


def push_to_hub(folder: str | os.PathLike, repo_id: str, token: str | None = None, private: bool = False,
                commit_message: str = "Upload from LLM Explorer", repo_type: str = "model",
                space_sdk: str | None = None, ignore_patterns: list[str] | None = None) -> str:
    """Create ``repo_id`` (if needed) and upload ``folder`` with huggingface_hub; returns the repo URL.

    A model by default; ``repo_type="space"`` with ``space_sdk`` makes a Space. ``ignore_patterns`` are
    huggingface_hub's own (fnmatch) patterns of files not to send. Raises ``HubPushError`` with one line
    (offline, no token, refused) and leaves ``folder`` alone."""
    from huggingface_hub import create_repo, upload_folder

    repo_id = (repo_id or "").strip()
    if not valid_repo_id(repo_id):
        raise HubPushError(f"repo id {repo_id!r} is not of the form USER/NAME")
    token = resolve_token(token)
    if not token:
        raise HubPushError("no Hugging Face token: paste one (write access) or set HF_TOKEN")
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    if offline or not hub_reachable():
        raise HubPushError("the Hugging Face Hub cannot be reached (offline?); nothing was pushed", folder)
    try:
        url = create_repo(repo_id, token=token, private=private, repo_type=repo_type, space_sdk=space_sdk,
                          exist_ok=True)
        upload_folder(repo_id=repo_id, folder_path=str(folder), token=token, repo_type=repo_type,
                      commit_message=commit_message, ignore_patterns=ignore_patterns)
    except Exception as exc:  # network, auth and permission errors come in many types
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise HubPushError(f"pushing to {repo_id} failed ({reason})", folder) from None
    return str(url)


def push_from_cli(folder: str | os.PathLike, repo_id: str, **kw) -> bool:
    """``push_to_hub`` for a command line: prints where it went, or why not in one line on stderr."""
    try:
        print(f"pushed to {push_to_hub(folder, repo_id, **kw)}", flush=True)
    except HubPushError as exc:
        print(f"push: {exc}", file=sys.stderr, flush=True)
        return False
    return True


def main(argv=None) -> int:
    import argparse

    from .registry import BUILTIN_DIR, USER_DIR, ModelLoadError, load_model

    p = argparse.ArgumentParser(prog="python -m llm_core.export",
                                description="Write a model in Hugging Face's GPT-2 layout "
                                            "(transformers / tokenizers open it unchanged).")
    p.add_argument("model", help="any name the app loads: pydoc-gpt, saved:NAME, gpt2, a Hub id, a folder")
    p.add_argument("out_dir", help="folder to write (replaced if it exists)")
    p.add_argument("--push-to-hub", metavar="REPO", help="also upload it to this Hub repo (USER/NAME)")
    p.add_argument("--private", action="store_true", help="create the Hub repo as private")
    p.add_argument("--token", help="Hugging Face token (default: HF_TOKEN or the saved login)")
    p.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32",
                   help="store the weights in this precision (fp16/bf16: half the bytes; they load as fp32)")
    args = p.parse_args(argv)
    try:
        bundle = load_model(args.model)
    except (ModelLoadError, HubUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    source = None
    if (BUILTIN_DIR / args.model).is_dir():
        source = BUILTIN_DIR / args.model
    elif args.model.startswith("saved:"):
        source = USER_DIR / args.model.removeprefix("saved:")
    elif Path(args.model).is_dir():
        source = Path(args.model)
    try:
        out = export_hf(bundle, args.out_dir, source_dir=source, dtype=args.dtype)
    except (CheckpointError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}: " + ", ".join(sorted(f.name for f in out.iterdir())))
    if args.push_to_hub and not push_from_cli(out, args.push_to_hub, token=args.token, private=args.private):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
