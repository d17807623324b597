"""LoRA adapters in ``peft``'s format, both ways, for GPT-2-layout models.

An adapter directory holds ``adapter_config.json`` (a ``peft.LoraConfig``) and
``adapter_model.safetensors`` (tensor names as ``peft`` saves them, e.g.
``base_model.model.transformer.h.0.attn.c_attn.lora_A.weight``), so

    base = GPT2LMHeadModel.from_pretrained(exported_base)
    model = peft.PeftModel.from_pretrained(base, adapter_dir)

computes what our model with the adapter computes. The safetensors header also carries our
``AdapterInfo`` (base model and its fingerprint, task, labels), which ``peft`` ignores.

How our layers map onto GPT-2's:

- ``q``/``k``/``v`` are one fused Conv1D, ``c_attn`` (out = [q | k | v]). Our separate
  LoRAs (each rank r, scale α/r) become one LoRA of rank n·r on ``c_attn`` (n = how many of
  q, k, v are adapted): A stacks the n A matrices; B is block-diagonal, each block writing
  its own third of the output; its α is n·α, so the scale stays α/r. Exact.
- ``out`` → ``attn.c_proj``, ``ff_in`` → ``mlp.c_fc``, ``ff_out`` → ``mlp.c_proj``,
  ``head`` → ``lm_head``. ``peft``'s A is [r, in] and B [out, r]: ours transposed.
- A classification head (ours: ``Linear(d, classes)`` with a bias) travels as
  ``GPT2ForSequenceClassification``'s ``score`` (no bias) in ``modules_to_save``; the bias b
  is folded into the final LayerNorm's shift: with W·δ = b (δ = W⁺b, exact while
  classes ≤ d), W·(ln_f(x) + δ) = W·ln_f(x) + b, so ``transformer.ln_f`` is saved too.
  As in training, the logits are read at a text's last token: end each text with
  ``<|endoftext|>`` and pass one text at a time (the exported config has no pad token).

Reading an adapter ``peft`` wrote for GPT-2 works the other way; each module's own rank and
scale are kept exactly by padding A/B to the largest rank and folding the scale into B.
"""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as load_bytes
from safetensors.torch import save_file

from .hf_format import hub_repo_id
from .lora import (
    ADAPTER_FORMAT, BLOCK_TARGETS, HEAD_TARGET, AdapterInfo, LinearWithLoRA, LoRAError, apply_adapter,
    check_adapter_base, lora_layers,
)

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PREFIX = "base_model.model."
QKV = ("q", "k", "v")
# Our target → GPT-2 module under transformer.h.{i} (or the model, for the head).
HF_MODULE = {"q": "attn.c_attn", "k": "attn.c_attn", "v": "attn.c_attn", "out": "attn.c_proj",
             "ff_in": "mlp.c_fc", "ff_out": "mlp.c_proj", HEAD_TARGET: "lm_head"}
MAX_ADAPTER_BYTES = 2 * 2**30  # an adapter (zipped or not) larger than this is refused before reading


def hub_name(base_model: str) -> str:
    from .checkpoint import GPT2_HUB_IDS

    return GPT2_HUB_IDS.get(base_model, base_model)


# ---------------------------------------------------------------- ours → peft

def fold_head_bias_into_ln_f(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The final LayerNorm's shift with the head's bias folded in (see the module docstring)."""
    head = model.out_head
    w = head.weight.detach().double()
    b = head.bias.detach().double() if head.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64, device=w.device)
    delta = torch.linalg.pinv(w) @ b
    if (w @ delta - b).abs().max().item() > 1e-6 * max(1.0, b.abs().max().item()):
        raise LoRAError("this classification head's bias cannot be folded into GPT-2's bias-free score layer "
                        "(more classes than model dimensions)")
    shift = model.final_norm.shift.detach().double() + delta
    return model.final_norm.scale.detach().float().cpu(), shift.float().cpu()


def peft_tensors(model: nn.Module, info: AdapterInfo) -> tuple[dict[str, torch.Tensor], dict, dict, list[str]]:
    """(tensors under peft's names, rank_pattern, alpha_pattern, modules_to_save) for a LoRA model."""
    if info.method != "lora":
        raise LoRAError(f"a {info.method} fine-tune changes whole weights, not a LoRA adapter: export the "
                        "tuned model instead")
    layers = lora_layers(model)
    r, alpha = int(info.rank), float(info.alpha)
    d = model.cfg.emb_dim
    out: dict[str, torch.Tensor] = {}
    qkv = [t for t in QKV if t in info.targets]
    rank_pattern, alpha_pattern = {}, {}
    if len(qkv) > 1:
        rank_pattern["attn.c_attn"] = len(qkv) * r
        alpha_pattern["attn.c_attn"] = len(qkv) * alpha
    for i in range(model.cfg.n_layers):
        h = f"{PREFIX}transformer.h.{i}."
        if qkv:
            a = torch.zeros(len(qkv) * r, d)
            b = torch.zeros(3 * d, len(qkv) * r)
            for j, t in enumerate(qkv):
                lora = layers[f"trf_blocks.{i}.{BLOCK_TARGETS[t]}"].lora
                a[j * r:(j + 1) * r] = lora.A.detach().float().cpu().T
                part = QKV.index(t)
                b[part * d:(part + 1) * d, j * r:(j + 1) * r] = lora.B.detach().float().cpu().T
            out[h + "attn.c_attn.lora_A.weight"], out[h + "attn.c_attn.lora_B.weight"] = a, b
        for t in ("out", "ff_in", "ff_out"):
            if t in info.targets:
                lora = layers[f"trf_blocks.{i}.{BLOCK_TARGETS[t]}"].lora
                out[h + HF_MODULE[t] + ".lora_A.weight"] = lora.A.detach().float().cpu().T.contiguous()
                out[h + HF_MODULE[t] + ".lora_B.weight"] = lora.B.detach().float().cpu().T.contiguous()
    modules_to_save: list[str] = []
    if HEAD_TARGET in info.targets and info.head_classes is None:
        lora = layers["out_head"].lora
        out[PREFIX + "lm_head.lora_A.weight"] = lora.A.detach().float().cpu().T.contiguous()
        out[PREFIX + "lm_head.lora_B.weight"] = lora.B.detach().float().cpu().T.contiguous()
    if info.head_classes is not None:
        head = model.out_head.linear if isinstance(model.out_head, LinearWithLoRA) else model.out_head
        out[PREFIX + "score.weight"] = head.weight.detach().float().cpu().contiguous()
        out[PREFIX + "transformer.ln_f.weight"], out[PREFIX + "transformer.ln_f.bias"] = fold_head_bias_into_ln_f(model)
        modules_to_save = ["score", "ln_f"]
    return {k: v.contiguous() for k, v in out.items()}, rank_pattern, alpha_pattern, modules_to_save


def save_peft_adapter(out_dir: str | os.PathLike, model: nn.Module, info: AdapterInfo) -> Path:
    """Write ``adapter_config.json`` + ``adapter_model.safetensors`` (+ README.md) into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors, rank_pattern, alpha_pattern, modules_to_save = peft_tensors(model, info)
    targets = sorted({HF_MODULE[t] for t in info.targets if not (t == HEAD_TARGET and info.head_classes)})
    # peft's LoraConfig fields, written directly so the app needs no peft at run time (peft fills
    # any field left out with its default; the tests load this with peft).
    config = {
        "peft_type": "LORA", "task_type": "SEQ_CLS" if info.head_classes is not None else "CAUSAL_LM",
        "base_model_name_or_path": hub_name(info.base_model), "inference_mode": True,
        "r": int(info.rank), "lora_alpha": float(info.alpha), "lora_dropout": 0.0, "target_modules": targets,
        "fan_in_fan_out": True, "bias": "none", "rank_pattern": rank_pattern, "alpha_pattern": alpha_pattern,
        "modules_to_save": modules_to_save or None, "init_lora_weights": True, "use_rslora": False,
        "use_dora": False, "layers_to_transform": None, "layers_pattern": None, "revision": None,
    }
    (out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2), encoding="utf-8")
    # "format" stays "pt" as transformers expects; our marker rides under its own key.
    save_file(tensors, str(out_dir / WEIGHTS_FILE),
              metadata={**info.to_metadata(), "format": "pt", "adapter_format": ADAPTER_FORMAT})
    labels = info.extra.get("labels") or []
    base = hub_repo_id(info.base_model)
    lines = ["---", "library_name: peft", *([f"base_model: {base}"] if base else []), "tags:", "- lora",
             "- llm-explorer", "---", "", f"# LoRA adapter for {info.base_model}", "",
             f"Rank {info.rank}, alpha {info.alpha:g}, on {', '.join(info.targets)}; task "
             f"{info.extra.get('task', 'instruction')}" + (f", labels {', '.join(map(str, labels))}" if labels else "")
             + ".", "", "```python", "import peft, transformers",
             f"base = transformers.{'GPT2ForSequenceClassification' if info.head_classes else 'GPT2LMHeadModel'}"
             f".from_pretrained(BASE{', num_labels=%d' % info.head_classes if info.head_classes else ''})",
             "model = peft.PeftModel.from_pretrained(base, ADAPTER_DIR)", "```", ""]
    if info.head_classes:
        lines += ["End each text with `<|endoftext|>` and classify one text at a time: the logits are read at "
                  "the last token, as in training.", ""]
    (out_dir / "README.md").write_text("\n".join(lines), encoding="utf-8")
    return out_dir


# ---------------------------------------------------------------- peft → ours

def _read_files(path: str | os.PathLike | list) -> tuple[dict, dict[str, torch.Tensor], dict]:
    """(adapter config, tensors, safetensors metadata) from a directory, a zip, or the two files."""
    def check_size(n: int, what: str) -> None:
        if n > MAX_ADAPTER_BYTES:
            raise LoRAError(f"{what} is {n / 2**30:.1f} GB; adapters up to {MAX_ADAPTER_BYTES / 2**30:.0f} GB "
                            "are read")

    paths = [Path(p) for p in path] if isinstance(path, (list, tuple)) else [Path(path)]
    if len(paths) == 1 and paths[0].is_dir():
        paths = [paths[0] / CONFIG_FILE, paths[0] / WEIGHTS_FILE]
    config_raw = weights_raw = None
    metadata: dict = {}
    tensors = None
    for p in paths:
        if p.suffix == ".zip":
            try:
                with zipfile.ZipFile(p) as zf:
                    for member in zf.infolist():
                        name = Path(member.filename).name
                        if name in (CONFIG_FILE, WEIGHTS_FILE):
                            check_size(member.file_size, name)
                            data = zf.read(member)
                            if name == CONFIG_FILE:
                                config_raw = data
                            else:
                                weights_raw = data
            except zipfile.BadZipFile:
                raise LoRAError(f"{p.name} is not a readable zip file") from None
        elif p.name == CONFIG_FILE or p.suffix == ".json":
            if p.is_file():
                check_size(p.stat().st_size, p.name)
                config_raw = p.read_bytes()
        elif p.suffix == ".safetensors" and p.is_file():
            check_size(p.stat().st_size, p.name)
            try:
                with safe_open(str(p), framework="pt") as f:
                    metadata = f.metadata() or {}
                    tensors = {k: f.get_tensor(k) for k in f.keys()}
            except (SafetensorError, OSError) as exc:
                raise LoRAError(f"{p.name} is not a readable safetensors file ({exc})") from None
    if weights_raw is not None:
        try:
            tensors = load_bytes(weights_raw)
            header_len = int.from_bytes(weights_raw[:8], "little")
            metadata = json.loads(weights_raw[8:8 + header_len]).get("__metadata__") or {}
        except Exception as exc:  # safetensors raises its own error types for damaged data
            raise LoRAError(f"{WEIGHTS_FILE} is not a readable safetensors file ({exc})") from None
    if tensors is None:
        raise LoRAError(f"no {WEIGHTS_FILE} found: give the adapter folder zipped, or {CONFIG_FILE} and "
                        f"{WEIGHTS_FILE} together")
    config = {}
    if config_raw is not None:
        try:
            config = json.loads(config_raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise LoRAError(f"{CONFIG_FILE} is not valid JSON ({exc})") from None
        if not isinstance(config, dict):
            raise LoRAError(f"{CONFIG_FILE} is not a JSON object")
    elif metadata.get("format") != ADAPTER_FORMAT:
        raise LoRAError(f"no {CONFIG_FILE} found beside {WEIGHTS_FILE}")
    if metadata.get("adapter_format") == ADAPTER_FORMAT:
        metadata = {**metadata, "format": ADAPTER_FORMAT}
    return config, tensors, metadata


def _pattern_value(pattern: dict, module: str, default):
    import re

    for key, value in (pattern or {}).items():
        if re.fullmatch(rf"(.*\.)?{key}", module) or module.endswith(key):
            return value
    return default


def _split(name: str) -> tuple[str, str]:
    """(module path without peft's prefix, 'A' / 'B' / param) of a peft tensor name."""
    name = name.removeprefix(PREFIX).replace(".default.", ".").replace(".modules_to_save.", ".")
    if ".lora_A." in name or name.endswith(".lora_A.weight"):
        return name.split(".lora_A")[0], "A"
    if ".lora_B." in name or name.endswith(".lora_B.weight"):
        return name.split(".lora_B")[0], "B"
    return name, "param"


def from_peft(config: dict, tensors: dict[str, torch.Tensor], cfg, base_name: str
              ) -> tuple[dict[str, torch.Tensor], AdapterInfo]:
    """An adapter peft wrote for GPT-2 as our tensors + AdapterInfo (rank = the largest module rank,
    alpha = that rank, each module's own scale folded into its B: exact)."""
    if config.get("peft_type", "LORA") != "LORA":
        raise LoRAError(f"a {config.get('peft_type')} adapter; only LoRA adapters are supported")
    for flag in ("use_dora", "use_rslora", "lora_bias"):
        if config.get(flag):
            raise LoRAError(f"LoRA with {flag} is not supported")
    if config.get("bias", "none") != "none":
        raise LoRAError("LoRA adapters that train biases are not supported")
    d, L = cfg.emb_dim, cfg.n_layers
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    params: dict[str, torch.Tensor] = {}
    for name, t in tensors.items():
        module, kind = _split(name)
        if ".base_layer." in module:  # peft keeps a copy of a targeted embedding/head: checked by the caller
            continue
        if kind == "param":
            params[module] = t
        else:
            pairs.setdefault(module, {})[kind] = t
    r_default, a_default = int(config.get("r", 8)), float(config.get("lora_alpha", 8))
    per_module = {}  # our module path → (A [in, r], B [r, out]) with the scale folded into B
    targets: set[str] = set()
    for module, ab in pairs.items():
        if set(ab) != {"A", "B"}:
            raise LoRAError(f"{module} has only half of its LoRA matrices")
        A, B = ab["A"].float(), ab["B"].float()  # [r, in], [out, r]
        rank = A.shape[0]
        scale = float(_pattern_value(config.get("alpha_pattern"), module, a_default)) / float(
            _pattern_value(config.get("rank_pattern"), module, r_default) or rank)
        parts = module.split(".")
        if module == "lm_head":
            expected = (d, cfg.vocab_size)
            if (A.shape[1], B.shape[0]) != expected:
                raise LoRAError(f"lm_head's LoRA is {A.shape[1]}→{B.shape[0]}, this model's head is "
                                f"{expected[0]}→{expected[1]}: the adapter is for another base model")
            per_module["out_head"] = (A.T, (B * scale).T)
            targets.add(HEAD_TARGET)
            continue
        if len(parts) != 5 or parts[0] != "transformer" or parts[1] != "h" or not parts[2].isdigit():
            raise LoRAError(f"LoRA on {module!r}: not a GPT-2 layer LLM Explorer can map")
        i, hf = int(parts[2]), ".".join(parts[3:])
        if i >= L:
            raise LoRAError(f"the adapter adapts layer {i}, this model has {L} layers: it is for another "
                            "base model")
        if hf == "attn.c_attn":
            if (A.shape[1], B.shape[0]) != (d, 3 * d):
                raise LoRAError(f"c_attn's LoRA is {A.shape[1]}→{B.shape[0]}, this model's is {d}→{3 * d}: "
                                "the adapter is for another base model")
            for j, t in enumerate(QKV):
                per_module[f"trf_blocks.{i}.{BLOCK_TARGETS[t]}"] = (A.T, (B[j * d:(j + 1) * d] * scale).T)
                targets.add(t)
            continue
        ours = {v: k for k, v in HF_MODULE.items() if k not in QKV and k != HEAD_TARGET}.get(hf)
        if ours is None:
            raise LoRAError(f"LoRA on {module!r}: not a GPT-2 layer LLM Explorer can map")
        shapes = {"out": (d, d), "ff_in": (d, 4 * d), "ff_out": (4 * d, d)}[ours]
        if (A.shape[1], B.shape[0]) != shapes:
            raise LoRAError(f"{module}'s LoRA is {A.shape[1]}→{B.shape[0]}, this model's is "
                            f"{shapes[0]}→{shapes[1]}: the adapter is for another base model")
        per_module[f"trf_blocks.{i}.{BLOCK_TARGETS[ours]}"] = (A.T, (B * scale).T)
        targets.add(ours)
    if not per_module:
        raise LoRAError("the adapter holds no LoRA matrices")
    rank = max(a.shape[1] for a, _ in per_module.values())
    out: dict[str, torch.Tensor] = {}
    for path, (A, B) in per_module.items():
        pad = rank - A.shape[1]
        out[f"{path}.lora.A"] = torch.cat([A, torch.zeros(A.shape[0], pad)], 1).contiguous()
        out[f"{path}.lora.B"] = torch.cat([B, torch.zeros(pad, B.shape[1])], 0).contiguous()
    head_classes = None
    if "score.weight" in params:
        w = params.pop("score.weight").float()
        if w.shape[1] != d:
            raise LoRAError(f"the classification head reads {w.shape[1]} dims, this model has {d}")
        head_classes = int(w.shape[0])
        out["out_head.weight"], out["out_head.bias"] = w, torch.zeros(head_classes)
    if "transformer.ln_f.weight" in params:
        out["final_norm.scale"] = params.pop("transformer.ln_f.weight").float()
        out["final_norm.shift"] = params.pop("transformer.ln_f.bias").float()
    if params:
        raise LoRAError(f"the adapter also replaces {', '.join(sorted(params)[:3])}, which LLM Explorer "
                        "cannot map")
    order = ("q", "k", "v", "out", "ff_in", "ff_out", HEAD_TARGET)
    info = AdapterInfo(base_model=str(config.get("base_model_name_or_path") or base_name), base_fingerprint="",
                       method="lora", rank=rank, alpha=float(rank),
                       targets=tuple(t for t in order if t in targets), head_classes=head_classes,
                       extra={"task": "classification" if head_classes else "instruction",
                              "source": "peft"})
    # Layers the adapter leaves alone get zero updates; fill them so every wrapped layer has A and B.
    for i in range(L):
        for t in info.targets:
            if t == HEAD_TARGET:
                continue
            path = f"trf_blocks.{i}.{BLOCK_TARGETS[t]}"
            if f"{path}.lora.A" not in out:
                fan_in, fan_out = {"q": (d, d), "k": (d, d), "v": (d, d), "out": (d, d), "ff_in": (d, 4 * d),
                                   "ff_out": (4 * d, d)}[t]
                out[f"{path}.lora.A"], out[f"{path}.lora.B"] = torch.zeros(fan_in, rank), torch.zeros(rank, fan_out)
    return out, info


def _ours_from_peft_names(tensors: dict[str, torch.Tensor], info: AdapterInfo, cfg) -> dict[str, torch.Tensor]:
    """Undo ``peft_tensors`` exactly for an adapter we wrote (our AdapterInfo is in its header)."""
    r, d = int(info.rank), cfg.emb_dim
    qkv = [t for t in QKV if t in info.targets]
    out: dict[str, torch.Tensor] = {}
    try:
        for i in range(cfg.n_layers):
            h = f"{PREFIX}transformer.h.{i}."
            if qkv:
                a, b = tensors[h + "attn.c_attn.lora_A.weight"], tensors[h + "attn.c_attn.lora_B.weight"]
                for j, t in enumerate(qkv):
                    part = QKV.index(t)
                    out[f"trf_blocks.{i}.{BLOCK_TARGETS[t]}.lora.A"] = a[j * r:(j + 1) * r].T.contiguous()
                    out[f"trf_blocks.{i}.{BLOCK_TARGETS[t]}.lora.B"] = \
                        b[part * d:(part + 1) * d, j * r:(j + 1) * r].T.contiguous()
            for t in ("out", "ff_in", "ff_out"):
                if t in info.targets:
                    out[f"trf_blocks.{i}.{BLOCK_TARGETS[t]}.lora.A"] = tensors[h + HF_MODULE[t] + ".lora_A.weight"].T.contiguous()
                    out[f"trf_blocks.{i}.{BLOCK_TARGETS[t]}.lora.B"] = tensors[h + HF_MODULE[t] + ".lora_B.weight"].T.contiguous()
        if HEAD_TARGET in info.targets and info.head_classes is None:
            out["out_head.lora.A"] = tensors[PREFIX + "lm_head.lora_A.weight"].T.contiguous()
            out["out_head.lora.B"] = tensors[PREFIX + "lm_head.lora_B.weight"].T.contiguous()
        if info.head_classes is not None:
            out["out_head.weight"] = tensors[PREFIX + "score.weight"]
            out["out_head.bias"] = torch.zeros(info.head_classes)
            out["final_norm.scale"] = tensors[PREFIX + "transformer.ln_f.weight"]
            out["final_norm.shift"] = tensors[PREFIX + "transformer.ln_f.bias"]
    except KeyError as exc:
        raise LoRAError(f"the adapter lacks tensor {exc}; it is damaged or for another base model") from None
    return out


def load_peft_adapter(path, base_model: nn.Module, base_name: str = "", check_identity: bool = True
                      ) -> tuple[nn.Module, AdapterInfo]:
    """Our model with a peft-format adapter applied (ours, or one ``peft`` wrote for GPT-2)."""
    config, tensors, metadata = _read_files(path)
    if metadata.get("format") == ADAPTER_FORMAT:
        info = AdapterInfo.from_metadata(metadata)
        if info.method != "lora":
            raise LoRAError("not a LoRA adapter")
        if check_identity:  # before any tensor is used: an adapter for another base says so clearly
            check_adapter_base(base_model, info)
        ours = _ours_from_peft_names(tensors, info, base_model.cfg)
        return apply_adapter(base_model, ours, info, check_identity=False), info
    ours, info = from_peft(config, tensors, base_model.cfg, base_name)
    from .lora import model_fingerprint  # it fits this model: record it as the base from now on

    info.base_fingerprint = model_fingerprint(base_model, skip=("out_head",) if info.head_classes else ())
    copy_of_head = tensors.get(PREFIX + "lm_head.base_layer.weight")
    if copy_of_head is not None and (copy_of_head.shape != base_model.out_head.weight.shape or not torch.allclose(
            copy_of_head.float(), base_model.out_head.weight.detach().float().cpu(), atol=1e-6)):
        raise LoRAError("the adapter's copy of the output head differs from this model's: it was trained on "
                        f"another base model ({info.base_model})")
    return apply_adapter(base_model, ours, info, check_identity=False), info


def is_peft_upload(paths) -> bool:
    """True when an upload is a peft adapter (a zip or adapter_config.json + weights), not our old file."""
    paths = [Path(p) for p in (paths if isinstance(paths, (list, tuple)) else [paths])]
    if any(p.suffix in (".zip", ".json") or p.is_dir() for p in paths):
        return True
    for p in paths:
        if p.suffix == ".safetensors":
            try:
                with safe_open(str(p), framework="pt") as f:
                    names = list(f.keys())
            except Exception:  # unreadable: let the old reader give its message
                return False
            return any(n.startswith(PREFIX) for n in names)
    return False
