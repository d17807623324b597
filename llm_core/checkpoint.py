"""Reading and writing weights: Hugging Face's GPT-2 layout (what we write) and our old format.

Weights are read with safetensors only; nothing here unpickles a file.

``save_checkpoint`` writes the layout ``transformers`` opens unchanged (see ``hf_format``):
``config.json`` (GPT2Config + an ``llm_explorer`` block), ``model.safetensors`` under OpenAI's
names, ``generation_config.json``, the tokenizer files and a ``README.md`` model card. Saving
writes a fresh directory and swaps it in with renames, so a crash leaves either the old
checkpoint or the new one, never a mix.

``load_checkpoint`` reads that layout (any GPT-2 saved by ``transformers`` too) and the
private format of earlier versions: ``config.json`` with ``"format": "llm-explorer"``, our
own tensor names, and a ``tokenizer.json`` of our own (base64 ranks).
"""
from __future__ import annotations

import base64
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .budget import check_size, config_from_dict, reserve
from .config import GPTConfig
from .files import atomic_dir, swap_dir
from .hf_format import (
    SIDE_KEY, CheckpointError, check_shapes, convert_hf_gpt2_state, expected_shapes, generation_config,
    gpt_config_from_hf, hf_config, hf_state_dict, model_card, qkv_bias_unused, read_tokenizer, write_tokenizer,
)
from .model import GPTModel
from .tokenizers import GPT2_PATTERN, BPETokenizer, bpe_from_merges, gpt2_tokenizer

FORMAT = "llm-explorer"  # the old private format's marker in config.json
MAX_CONFIG_BYTES = 1_000_000
Progress = Callable[[float, str], None]
GPT2_VOCAB = 50257
KEPT_FILES = ("TRAINING.md",)
# What a model directory on the Hub needs (never the pickled *.bin files beside them).
HUB_FILES = ["config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
             "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt", "README.md",
             "TRAINING.md"]


# ---------------------------------------------------------------- our old tokenizer file

def tokenizer_to_json(tok: BPETokenizer) -> dict:
    """The old private tokenizer file (kept to test that old checkpoints still load)."""
    enc = tok.encoding
    ranks = sorted(enc._mergeable_ranks.items(), key=lambda kv: kv[1])
    return {
        "kind": "bpe",
        "name": tok.name,
        "pat_str": enc._pat_str,
        "ranks": [base64.b64encode(b).decode("ascii") for b, _ in ranks],
        "special_tokens": dict(enc._special_tokens),
    }


def tokenizer_from_json(d: dict) -> BPETokenizer:
    ranks = {base64.b64decode(s): i for i, s in enumerate(d["ranks"])}
    tok = bpe_from_merges(d.get("name", "bpe"), ranks, d.get("pat_str", GPT2_PATTERN), with_endoftext=False)
    if d.get("special_tokens"):
        import tiktoken
        enc = tiktoken.Encoding(name=tok.name, pat_str=tok.encoding._pat_str, mergeable_ranks=ranks,
                                special_tokens={k: int(v) for k, v in d["special_tokens"].items()})
        tok = BPETokenizer(enc, name=tok.name)
    return tok


# ---------------------------------------------------------------- writing

def write_model_dir(out: Path, model: GPTModel, tokenizer: BPETokenizer | None, meta: dict | None,
                    name: str | None = None, dtype: str = "fp32") -> list[str]:
    """Every file of the Hugging Face layout into the existing directory ``out``; returns their names.
    ``dtype`` is how the weights are stored (fp32, fp16, bf16); they always load as fp32."""
    meta = dict(meta or {})
    files: list[str] = []
    if tokenizer is None and model.cfg.vocab_size < GPT2_VOCAB:
        tokenizer = gpt2_tokenizer()  # a toy vocabulary with no tokenizer of its own: none is written
    else:
        tokenizer = tokenizer or gpt2_tokenizer()
        if tokenizer.n_vocab > model.cfg.vocab_size:
            raise CheckpointError(f"the tokenizer has {tokenizer.n_vocab:,} tokens but the model only "
                                  f"{model.cfg.vocab_size:,} embeddings")
        files = write_tokenizer(out, tokenizer, model.cfg.context_length)
    save_file(hf_state_dict(model, dtype), str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(hf_config(model.cfg, tokenizer, meta, dtype), indent=2))
    (out / "generation_config.json").write_text(json.dumps(generation_config(tokenizer), indent=2))
    card = model_card(name or meta.get("name") or out.name.lstrip("."), model.cfg, tokenizer, meta)
    (out / "README.md").write_text(card, encoding="utf-8")
    return ["config.json", "model.safetensors", "generation_config.json", *files, "README.md"]


def save_checkpoint(path: str | os.PathLike, model: GPTModel, tokenizer: BPETokenizer | None = None,
                    meta: dict | None = None, dtype: str = "fp32") -> Path:
    """Write model + tokenizer to ``path`` (Hugging Face's GPT-2 layout) atomically; ``dtype``
    fp16 / bf16 stores the weights in half the bytes (they load as fp32 all the same)."""
    path = Path(path)
    with atomic_dir(path) as tmp:
        write_model_dir(tmp, model, tokenizer, meta, name=(meta or {}).get("name") or path.name, dtype=dtype)
        for keep in KEPT_FILES:  # written beside the weights by the training CLI
            if (path / keep).is_file():
                shutil.copy2(path / keep, tmp / keep)
        for f in tmp.iterdir():
            f.chmod(0o644)
    return path


# ---------------------------------------------------------------- reading

def read_config(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a folder")
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise CheckpointError(f"{path} is not a model folder: it has no config.json "
                              "(a model folder holds config.json and model.safetensors)")
    if cfg_file.stat().st_size > MAX_CONFIG_BYTES:
        raise CheckpointError(f"config.json is {cfg_file.stat().st_size:,} bytes; a model config is under "
                              f"{MAX_CONFIG_BYTES:,}")
    try:
        config = json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{cfg_file} is not valid JSON: {exc}") from None
    except RecursionError:
        raise CheckpointError("config.json is nested too deeply to be a model config") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{cfg_file} is not a JSON object")
    return config


def _weights_file(path: Path) -> Path:
    f = path / "model.safetensors"
    if not f.is_file():
        if any(path.glob("*.bin")) or any(path.glob("*.pt")) or any(path.glob("*.pth")):
            raise CheckpointError(f"{path} has only pickled weights (.bin/.pt); "
                                  "LLM Explorer reads safetensors only")
        if any(path.glob("model-*-of-*.safetensors")):
            raise CheckpointError(f"{path} has its weights split over several files; only a single "
                                  "model.safetensors is supported")
        raise CheckpointError(f"{path} has no model.safetensors")
    return f


def _read_tensors(file: Path, expected: dict[str, tuple[int, ...]], prefixes=("",)) -> dict[str, torch.Tensor]:
    """Read only the tensors ``expected`` names, after checking names, shapes and dtypes in the
    file's header: a file that does not match its config is refused before its weights are read."""
    try:
        with safe_open(str(file), framework="pt") as f:
            keys = set(f.keys())
            found = {}
            for name, shape in expected.items():
                key = next((p + name for p in prefixes if p + name in keys), None)
                if key is None:
                    raise CheckpointError(f"the weights have no tensor {name!r}: they do not match the config")
                sl = f.get_slice(key)
                if tuple(sl.get_shape()) != tuple(shape):
                    raise CheckpointError(f"tensor {name} is {list(sl.get_shape())} in the weights but "
                                          f"{list(shape)} in the config: they do not match")
                if sl.get_dtype() not in ("F32", "F16", "BF16"):
                    raise CheckpointError(f"tensor {name} has dtype {sl.get_dtype()}; only float weights are read")
                found[name] = key
            return {name: f.get_tensor(key).float() for name, key in found.items()}
    except SafetensorError as exc:
        raise CheckpointError(f"{file.name} is not a readable safetensors file ({exc})") from None


def _expected_shapes(cfg: GPTConfig) -> dict[str, tuple[int, ...]]:
    from .views.architecture_view import build_on_meta

    shapes = {k: tuple(v.shape) for k, v in build_on_meta(cfg).state_dict().items()}
    if cfg.tie_weights:
        shapes.pop("out_head.weight", None)
    return shapes


def _header(file: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """Names, shapes and dtypes from a safetensors header (no tensor is read)."""
    try:
        with safe_open(str(file), framework="pt") as f:
            return {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}
    except SafetensorError as exc:
        raise CheckpointError(f"{file.name} is not a readable safetensors file ({exc})") from None


def _check_hf_header(file: Path, cfg: GPTConfig) -> None:
    """Before the weights are read: every tensor the config needs, of its shape, and not much
    more than that in all (old GPT-2 files also hold attention-mask buffers)."""
    header = _header(file)
    check_shapes({k: torch.empty(shape, device="meta") for k, (shape, _) in header.items()}, cfg)
    sizes = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
    total = sum(math.prod(shape) * sizes.get(dtype, 8) for shape, dtype in header.values())
    expected = sum(math.prod(shape) for shape in expected_shapes(cfg).values()) * 4
    if total > 1.25 * expected + 64 * 2**20:
        raise CheckpointError(f"model.safetensors holds {total / 2**20:,.0f} MB of tensors; a GPT-2 of this "
                              f"config needs {expected / 2**20:,.0f} MB")


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(_weights_file(path)))
    except SafetensorError as exc:
        raise CheckpointError(f"{path / 'model.safetensors'} is not a readable safetensors file ({exc})") from None


def load_checkpoint(path: str | os.PathLike, device="cpu") -> tuple[GPTModel, BPETokenizer, dict]:
    """Load a directory in Hugging Face's GPT-2 layout (ours or anyone's) or in our old format.

    The config is checked (types, ranges, the memory budget) and the weights' header matched
    against it before any tensor is made.
    """
    path = Path(path)
    config = read_config(path)
    if not isinstance(config, dict):
        raise CheckpointError("config.json must hold a JSON object")
    if config.get("format") != FORMAT:
        return load_hf_gpt2(path, device=device)
    cfg = config_from_dict(config.get("model"))
    check_size(cfg)
    tok_info = config.get("tokenizer") or {"kind": "gpt2"}
    if not isinstance(tok_info, dict) or tok_info.get("kind", "gpt2") not in ("gpt2", "bpe"):
        raise CheckpointError("config.json's tokenizer must be {\"kind\": \"gpt2\"} or {\"kind\": \"bpe\", ...}")
    weights = _weights_file(path)
    with reserve(cfg):
        state = _read_tensors(weights, _expected_shapes(cfg))
        model = GPTModel(cfg)
        if cfg.tie_weights:
            state["out_head.weight"] = state["tok_emb.weight"]
        model.load_state_dict(state, strict=True)
    if tok_info.get("kind") == "bpe":
        tok_file = path / str(tok_info.get("file", "tokenizer.json"))
        if tok_file.name != str(tok_info.get("file", "tokenizer.json")) or not tok_file.is_file():
            raise CheckpointError("the tokenizer file named in config.json is missing")
        try:
            tokenizer = tokenizer_from_json(json.loads(tok_file.read_text()))
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"tokenizer.json cannot be read ({type(exc).__name__})") from None
    else:
        tokenizer = gpt2_tokenizer()
    meta = config.get("meta")
    return model.to(device).eval(), tokenizer, meta if isinstance(meta, dict) else {}


# ---------------------------------------------------------------- GPT-2, Hugging Face layout

def load_hf_gpt2(path: str | os.PathLike, device="cpu") -> tuple[GPTModel, BPETokenizer, dict]:
    """A GPT-2-architecture model directory: ours, or one ``transformers`` saved."""
    path = Path(path)
    hf = read_config(path)
    cfg = gpt_config_from_hf(hf)
    check_size(cfg)
    _check_hf_header(_weights_file(path), cfg)
    with reserve(cfg):
        raw = _read_weights(path)
    check_shapes(raw, cfg)
    raw = {("transformer." + k if not k.startswith(("transformer.", "lm_head.")) else k): v for k, v in raw.items()}
    side = hf.get(SIDE_KEY) if isinstance(hf.get(SIDE_KEY), dict) else {}
    if side.get("model", {}).get("qkv_bias") is False and qkv_bias_unused(raw, cfg):
        cfg = cfg.with_(qkv_bias=False)  # ours, trained without q/k/v biases: keep it that way
    tokenizer = read_tokenizer(path, name=str(side.get("tokenizer") or "bpe"))
    if tokenizer is None and side and cfg.vocab_size < GPT2_VOCAB:
        tokenizer = gpt2_tokenizer()  # ours, a toy vocabulary saved without a tokenizer (as before)
    elif tokenizer is None:
        if cfg.vocab_size != GPT2_VOCAB:
            raise CheckpointError(f"its vocabulary has {cfg.vocab_size:,} tokens, not GPT-2's {GPT2_VOCAB:,}, "
                                  "and no tokenizer is saved beside it (tokenizer.json, or vocab.json + "
                                  "merges.txt)")
        tokenizer = gpt2_tokenizer()
    elif tokenizer.n_vocab > cfg.vocab_size:
        raise CheckpointError(f"the tokenizer has {tokenizer.n_vocab:,} tokens but the model only "
                              f"{cfg.vocab_size:,} embeddings")
    with reserve(cfg):
        model = GPTModel(cfg)
        model.load_state_dict(convert_hf_gpt2_state(raw, cfg), strict=True)
    del raw
    meta = dict(side.get("meta") or {}) if side else {"source": str(path)}
    return model.to(device).eval(), tokenizer, meta


# ---------------------------------------------------------------- the Hub

GPT2_HUB_IDS = {
    "gpt2": "openai-community/gpt2",
    "gpt2-medium": "openai-community/gpt2-medium",
    "gpt2-large": "openai-community/gpt2-large",
    "gpt2-xl": "openai-community/gpt2-xl",
}


class HubUnavailable(RuntimeError):
    """The Hub could not be reached and nothing is cached."""


def _progress_tqdm(progress: Progress | None, label: str):
    from tqdm.auto import tqdm

    class Reporter(tqdm):
        def update(self, n=1):
            out = super().update(n)
            if progress and self.total:
                progress(min(self.n / self.total, 1.0), f"downloading {label}: "
                         f"{self.n / 1e6:.0f} / {self.total / 1e6:.0f} MB")
            return out

    return Reporter


def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """A quick TCP check, so an offline machine fails in seconds instead of retrying for half a minute."""
    import socket
    from urllib.parse import urlparse

    endpoint = os.environ.get("HF_ENDPOINT")
    if endpoint:
        host = urlparse(endpoint).hostname or host
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _snapshot_ready(folder: str | os.PathLike) -> Path | None:
    """The snapshot folder when it holds what loading needs: config, weights, and the tokenizer
    unless the vocabulary is GPT-2's (a cache filled by an older version may lack it)."""
    folder = Path(folder)
    if not ((folder / "config.json").is_file() and (folder / "model.safetensors").is_file()):
        return None
    try:
        vocab = json.loads((folder / "config.json").read_text()).get("vocab_size")
    except (OSError, ValueError, AttributeError):
        return folder  # the loader reports what is wrong with it
    has_tokenizer = (folder / "tokenizer.json").is_file() or (folder / "vocab.json").is_file()
    return folder if has_tokenizer or vocab == GPT2_VOCAB else None


def download_from_hub(repo_id: str, progress: Progress | None = None,
                      check_config: Callable[[Path], None] | None = None) -> Path:
    """Fetch a model directory (config, safetensors weights, tokenizer files; cached; honours
    HF_HUB_OFFLINE) with ``snapshot_download`` limited to the files a model needs.

    ``check_config(folder)`` runs once config.json is there, before the weights are fetched:
    a model too large is refused without downloading it."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError

    repo_id = GPT2_HUB_IDS.get(repo_id, repo_id)
    unreachable = (f"{repo_id} is not cached and the Hugging Face Hub cannot be reached "
                   "(offline?). Use a built-in model or a local directory.")
    try:  # the cache first: no network needed for a model downloaded before
        ready = _snapshot_ready(snapshot_download(repo_id, allow_patterns=HUB_FILES, local_files_only=True))
        if ready is not None:
            return ready
    except (LocalEntryNotFoundError, OSError, ValueError):
        pass
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    if offline or not hub_reachable():
        raise HubUnavailable(unreachable)
    try:
        if check_config is not None:
            check_config(Path(snapshot_download(repo_id, allow_patterns=["config.json"], etag_timeout=5)))
        folder = snapshot_download(repo_id, allow_patterns=HUB_FILES, etag_timeout=5,
                                   tqdm_class=_progress_tqdm(progress, repo_id))
    except LocalEntryNotFoundError:
        raise HubUnavailable(unreachable) from None
    except RepositoryNotFoundError:
        raise HubUnavailable(f"no repository {repo_id!r} on the Hub (or it is private)") from None
    except OSError as exc:  # connection errors that slipped past the library's own handling
        raise HubUnavailable(f"could not download {repo_id}: {exc}") from None
    ready = _snapshot_ready(folder)
    if ready is None:
        raise HubUnavailable(f"{repo_id} has no config.json + model.safetensors (only safetensors "
                             "weights are read)")
    return ready


def convert_old_checkpoint(path: str | os.PathLike, probe_text: str = "The list of modules.\n  def f(x): return x") -> Path:
    """Rewrite a checkpoint of the old private format in the Hugging Face layout, in place, only
    after checking that the rewritten one gives identical logits and token ids."""
    path = Path(path)
    if read_config(path).get("format") != FORMAT:
        raise CheckpointError(f"{path} is not in the old format")
    model, tok, meta = load_checkpoint(path)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.convert-", dir=path.parent))
    try:
        new = save_checkpoint(staging / path.name, model, tok, meta)
        model2, tok2, _ = load_checkpoint(new)
        ids = tok.encode(probe_text)
        if tok2.encode(probe_text) != ids or _ranks_of(tok2) != _ranks_of(tok):
            raise CheckpointError("the converted tokenizer differs; nothing was changed")
        x = torch.tensor([ids[: model.cfg.context_length]])
        with torch.no_grad():
            if not torch.equal(model(x), model2(x)):
                raise CheckpointError("the converted weights give different logits; nothing was changed")
        for keep in KEPT_FILES:
            if (path / keep).is_file():
                shutil.copy2(path / keep, new / keep)
        swap_dir(new, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def _ranks_of(tok: BPETokenizer) -> tuple[dict, dict]:
    return tok.encoding._mergeable_ranks, tok.encoding._special_tokens
