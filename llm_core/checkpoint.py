"""Reading and writing weights: our own checkpoints and GPT-2's Hugging Face layout.

Weights are read with safetensors only; nothing here unpickles a file.

Our format is a directory: ``config.json`` ({"format": "llm-explorer", "model": GPTConfig,
"tokenizer": {...}, "meta": {...}}), ``model.safetensors`` and, for a tokenizer of
our own, ``tokenizer.json``. Saving writes a fresh directory and swaps it in with
renames, so a crash leaves either the old checkpoint or the new one, never a mix.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import save_file

from .budget import check_size, config_from_dict, reserve
from .config import GPTConfig
from .model import GPTModel
from .tokenizers import GPT2_PATTERN, BPETokenizer, bpe_from_merges, gpt2_tokenizer

FORMAT = "llm-explorer"
MAX_CONFIG_BYTES = 1_000_000
Progress = Callable[[float, str], None]


class CheckpointError(ValueError):
    """A directory that is not a checkpoint we can read (message says why)."""


# ---------------------------------------------------------------- tokenizer files

def tokenizer_to_json(tok: BPETokenizer) -> dict:
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


# ---------------------------------------------------------------- our own format

def _state_for_saving(model: GPTModel) -> dict[str, torch.Tensor]:
    state = model.state_dict()
    if model.cfg.tie_weights:
        state.pop("out_head.weight", None)  # the same tensor as tok_emb.weight
    return {k: v.detach().to("cpu").contiguous() for k, v in state.items()}


def save_checkpoint(path: str | os.PathLike, model: GPTModel, tokenizer: BPETokenizer | None = None,
                    meta: dict | None = None) -> Path:
    """Write model (+ tokenizer unless it is GPT-2's) to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    tmp.chmod(0o755)  # mkdtemp makes it owner-only; a served app may run as another user
    try:
        tok_info: dict = {"kind": "gpt2"}
        if tokenizer is not None and tokenizer.name != "gpt2":
            (tmp / "tokenizer.json").write_text(json.dumps(tokenizer_to_json(tokenizer)))
            tok_info = {"kind": "bpe", "file": "tokenizer.json"}
        save_file(_state_for_saving(model), str(tmp / "model.safetensors"))
        config = {"format": FORMAT, "model": model.cfg.to_dict(), "tokenizer": tok_info, "meta": meta or {}}
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        for f in tmp.iterdir():
            f.chmod(0o644)
        old = None
        if path.exists():
            old = path.parent / f".{path.name}.old-{os.getpid()}"
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_config(path: str | os.PathLike) -> dict:
    cfg_file = Path(path) / "config.json"
    if not cfg_file.is_file():
        raise CheckpointError(f"{path} has no config.json")
    if cfg_file.stat().st_size > MAX_CONFIG_BYTES:
        raise CheckpointError(f"config.json is {cfg_file.stat().st_size:,} bytes; a model config is under "
                              f"{MAX_CONFIG_BYTES:,}")
    try:
        return json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"config.json is not valid JSON: {exc}") from None
    except RecursionError:
        raise CheckpointError("config.json is nested too deeply to be a model config") from None


def _weights_file(path: Path) -> Path:
    f = path / "model.safetensors"
    if not f.is_file():
        if any(path.glob("*.bin")) or any(path.glob("*.pt")) or any(path.glob("*.pth")):
            raise CheckpointError(f"{path} has only pickled weights (.bin/.pt); "
                                  "LLM Explorer reads safetensors only")
        raise CheckpointError(f"{path} has no model.safetensors")
    return f


def _read_tensors(file: Path, expected: dict[str, tuple[int, ...]], prefixes=("",)) -> dict[str, torch.Tensor]:
    """Read only the tensors ``expected`` names, after checking names, shapes and dtypes in the
    file's header: a file that does not match its config is refused before its weights are read."""
    from safetensors import SafetensorError, safe_open

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
    from .architecture_view import build_on_meta

    shapes = {k: tuple(v.shape) for k, v in build_on_meta(cfg).state_dict().items()}
    if cfg.tie_weights:
        shapes.pop("out_head.weight", None)
    return shapes


def load_checkpoint(path: str | os.PathLike, device="cpu") -> tuple[GPTModel, BPETokenizer, dict]:
    """Load a directory in our format or in Hugging Face's GPT-2 layout.

    The config is checked (types, ranges, the memory budget) before any tensor is made.
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

HF_GPT2_KEYS = ("vocab_size", "n_positions", "n_embd", "n_head", "n_layer")


def hf_gpt2_config(hf: dict) -> GPTConfig:
    if not isinstance(hf, dict):
        raise CheckpointError("config.json must hold a JSON object")
    if hf.get("model_type", "gpt2") != "gpt2":
        raise CheckpointError(f"model_type {str(hf.get('model_type'))[:40]!r} is not GPT-2")
    missing = [k for k in HF_GPT2_KEYS if k not in hf]
    if missing:
        raise CheckpointError(f"config.json has no {', '.join(missing)}: not a GPT-2 config")
    act = hf.get("activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        raise CheckpointError(f"activation {str(act)[:40]!r} is not GPT-2's tanh GELU")
    cfg = config_from_dict({"vocab_size": hf["vocab_size"], "context_length": hf["n_positions"],
                            "emb_dim": hf["n_embd"], "n_heads": hf["n_head"], "n_layers": hf["n_layer"],
                            "drop_rate": 0.0, "qkv_bias": True, "tie_weights": True})
    if hf.get("n_inner") not in (None, 4 * cfg.emb_dim):
        raise CheckpointError("feed-forward width other than 4·n_embd is not supported")
    if hf.get("scale_attn_by_inverse_layer_idx") or hf.get("scale_attn_weights") is False:
        raise CheckpointError("non-standard attention scaling is not supported")
    return cfg


def hf_gpt2_shapes(cfg: GPTConfig) -> dict[str, tuple[int, ...]]:
    """The tensors (names and shapes) a GPT-2 checkpoint in Hugging Face's layout must have."""
    d, v = cfg.emb_dim, cfg.vocab_size
    shapes = {"wte.weight": (v, d), "wpe.weight": (cfg.context_length, d), "ln_f.weight": (d,), "ln_f.bias": (d,)}
    for i in range(cfg.n_layers):
        h = f"h.{i}."
        shapes.update({h + "ln_1.weight": (d,), h + "ln_1.bias": (d,), h + "ln_2.weight": (d,), h + "ln_2.bias": (d,),
                       h + "attn.c_attn.weight": (d, 3 * d), h + "attn.c_attn.bias": (3 * d,),
                       h + "attn.c_proj.weight": (d, d), h + "attn.c_proj.bias": (d,),
                       h + "mlp.c_fc.weight": (d, 4 * d), h + "mlp.c_fc.bias": (4 * d,),
                       h + "mlp.c_proj.weight": (4 * d, d), h + "mlp.c_proj.bias": (d,)})
    return shapes


def convert_hf_gpt2_state(sd: dict[str, torch.Tensor], cfg: GPTConfig) -> dict[str, torch.Tensor]:
    """Map OpenAI's tensor names onto GPTModel's (Conv1D weights are [in, out]: transpose)."""
    sd = {k.removeprefix("transformer."): v for k, v in sd.items()}
    out = {"tok_emb.weight": sd["wte.weight"], "pos_emb.weight": sd["wpe.weight"],
           "final_norm.scale": sd["ln_f.weight"], "final_norm.shift": sd["ln_f.bias"]}
    for i in range(cfg.n_layers):
        h, b = f"h.{i}.", f"trf_blocks.{i}."
        qw, kw, vw = sd[h + "attn.c_attn.weight"].chunk(3, dim=-1)
        qb, kb, vb = sd[h + "attn.c_attn.bias"].chunk(3, dim=-1)
        for name, w, bias in (("W_query", qw, qb), ("W_key", kw, kb), ("W_value", vw, vb)):
            out[b + f"att.{name}.weight"] = w.T
            out[b + f"att.{name}.bias"] = bias
        out[b + "att.out_proj.weight"] = sd[h + "attn.c_proj.weight"].T
        out[b + "att.out_proj.bias"] = sd[h + "attn.c_proj.bias"]
        out[b + "ff.layers.0.weight"] = sd[h + "mlp.c_fc.weight"].T
        out[b + "ff.layers.0.bias"] = sd[h + "mlp.c_fc.bias"]
        out[b + "ff.layers.2.weight"] = sd[h + "mlp.c_proj.weight"].T
        out[b + "ff.layers.2.bias"] = sd[h + "mlp.c_proj.bias"]
        out[b + "norm1.scale"], out[b + "norm1.shift"] = sd[h + "ln_1.weight"], sd[h + "ln_1.bias"]
        out[b + "norm2.scale"], out[b + "norm2.shift"] = sd[h + "ln_2.weight"], sd[h + "ln_2.bias"]
    out["out_head.weight"] = out["tok_emb.weight"]
    return {k: v.contiguous() for k, v in out.items()}


def load_hf_gpt2(path: str | os.PathLike, device="cpu") -> tuple[GPTModel, BPETokenizer, dict]:
    path = Path(path)
    cfg = hf_gpt2_config(read_config(path))
    if cfg.vocab_size > 50257:
        raise CheckpointError("vocabulary larger than GPT-2's; only GPT-2's tokenizer is supported")
    check_size(cfg)
    weights = _weights_file(path)
    with reserve(cfg):
        sd = _read_tensors(weights, hf_gpt2_shapes(cfg), prefixes=("", "transformer."))
        state = convert_hf_gpt2_state(sd, cfg)
        del sd
        model = GPTModel(cfg)
        model.load_state_dict(state, strict=True)
    return model.to(device).eval(), gpt2_tokenizer(), {"source": str(path)}


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


def download_from_hub(repo_id: str, progress: Progress | None = None,
                      check_config: Callable[[Path], None] | None = None) -> Path:
    """Fetch config.json + model.safetensors (cached; honours HF_HUB_OFFLINE).

    ``check_config(folder)`` runs between the two downloads: a model too large is refused
    before its weights are fetched."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    repo_id = GPT2_HUB_IDS.get(repo_id, repo_id)
    try:  # the cache first: no network needed for a model downloaded before
        cfg_path = hf_hub_download(repo_id, "config.json", local_files_only=True)
        hf_hub_download(repo_id, "model.safetensors", local_files_only=True)
        return Path(cfg_path).parent
    except LocalEntryNotFoundError:
        pass
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    if offline or not hub_reachable():
        raise HubUnavailable(f"{repo_id} is not cached and the Hugging Face Hub cannot be reached "
                             "(offline?). Use a built-in model or a local directory.")
    try:
        cfg_path = hf_hub_download(repo_id, "config.json", etag_timeout=5)
        if check_config is not None:
            check_config(Path(cfg_path).parent)
        hf_hub_download(repo_id, "model.safetensors", etag_timeout=5,
                        tqdm_class=_progress_tqdm(progress, repo_id))
    except LocalEntryNotFoundError:
        raise HubUnavailable(f"{repo_id} is not cached and the Hugging Face Hub cannot be reached "
                             "(offline?). Use a built-in model or a local directory.") from None
    except RepositoryNotFoundError:
        raise HubUnavailable(f"no repository {repo_id!r} on the Hub") from None
    except EntryNotFoundError:
        raise HubUnavailable(f"{repo_id} has no model.safetensors (only safetensors weights are read)") from None
    except OSError as exc:  # connection errors that slipped past the library's own handling
        raise HubUnavailable(f"could not download {repo_id}: {exc}") from None
    return Path(cfg_path).parent
