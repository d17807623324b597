"""LoRA, the book's appendix E: a frozen ``nn.Linear`` plus a trainable low-rank update.

``LinearWithLoRA(linear, rank, alpha)`` computes ``linear(x) + (alpha / rank) · x·A·B`` with
``A`` [in, rank] initialised like a Linear layer (Kaiming-uniform, a = √5) and ``B``
[rank, out] zeros, so a freshly wrapped model computes exactly what it did before.

Targets name the Linear layers of a GPTModel block (``q``, ``k``, ``v``, ``out`` of the
attention, ``ff_in``, ``ff_out`` of the feed-forward) and the output ``head``; groups
(``attention``, ``feed-forward``, ``all``) expand to them. An adapter (the LoRA matrices
plus any fully trained tensors, such as a new classification head) is saved alone as
safetensors with the base model's identity, and is only re-applied to that base model.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import save_file

from .files import atomic_file

ADAPTER_FORMAT = "llm-explorer-lora"
ADAPTER_VERSION = "1"

# Target name → path of the Linear inside a TransformerBlock (or the model, for the head).
BLOCK_TARGETS: dict[str, str] = {
    "q": "att.W_query",
    "k": "att.W_key",
    "v": "att.W_value",
    "out": "att.out_proj",
    "ff_in": "ff.layers.0",
    "ff_out": "ff.layers.2",
}
HEAD_TARGET = "head"
ALL_TARGETS: tuple[str, ...] = (*BLOCK_TARGETS, HEAD_TARGET)
TARGET_GROUPS: dict[str, tuple[str, ...]] = {
    "attention": ("q", "k", "v", "out"),
    "feed-forward": ("ff_in", "ff_out"),
    "all": ALL_TARGETS,
}
TARGET_LABELS = {
    "q": "attention W_query", "k": "attention W_key", "v": "attention W_value",
    "out": "attention out_proj", "ff_in": "feed-forward in (d→4d)", "ff_out": "feed-forward out (4d→d)",
    "head": "output head",
}


class LoRAError(ValueError):
    """Bad LoRA settings or an adapter that does not fit (the message says why)."""


class LoRALayer(nn.Module):
    """The low-rank update (alpha / rank) · x·A·B; B starts at zero so the update starts at zero."""

    def __init__(self, in_dim: int, out_dim: int, rank: int, alpha: float):
        super().__init__()
        check_rank_alpha(rank, alpha)
        self.A = nn.Parameter(torch.empty(in_dim, rank))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))  # as nn.Linear initialises its weight
        self.B = nn.Parameter(torch.zeros(rank, out_dim))
        self.rank = int(rank)
        self.alpha = float(alpha)
        self.scaling = self.alpha / self.rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scaling * ((x @ self.A) @ self.B)

    def delta_weight(self) -> torch.Tensor:
        """The update as a Linear weight [out, in]: scaling · (A·B)ᵀ."""
        return self.scaling * (self.A @ self.B).T


class LinearWithLoRA(nn.Module):
    """``linear(x) + lora(x)``; after ``merge()`` the update lives in the weight instead."""

    def __init__(self, linear: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.linear = linear
        self.lora = LoRALayer(linear.in_features, linear.out_features, rank, alpha)
        self.merged = False

    @property
    def weight(self) -> torch.Tensor:  # so code reading ``layer.weight`` keeps working
        return self.linear.weight

    @property
    def bias(self):
        return self.linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.linear(x)
        if self.merged:
            return out
        # linear(x) + lora(x), computed as: scale the small [.., rank] tensor, then one
        # GEMM that accumulates into the frozen layer's output (no full-size temporaries).
        h = (x @ self.lora.A) * self.lora.scaling
        flat = torch.addmm(out.reshape(-1, out.shape[-1]), h.reshape(-1, h.shape[-1]), self.lora.B)
        return flat.view(out.shape)

    @torch.no_grad()
    def merge(self) -> None:
        """Add the update into the frozen weight (faster inference, same outputs)."""
        if not self.merged:
            self.linear.weight += self.lora.delta_weight().to(self.linear.weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Take the update back out of the weight (to keep training or to compare)."""
        if self.merged:
            self.linear.weight -= self.lora.delta_weight().to(self.linear.weight.dtype)
            self.merged = False


def check_rank_alpha(rank, alpha, in_dim: int | None = None, out_dim: int | None = None) -> None:
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise LoRAError(f"LoRA rank must be a whole number of at least 1 (got {rank!r})")
    if in_dim is not None and out_dim is not None and rank > min(in_dim, out_dim):
        raise LoRAError(f"LoRA rank {rank} is larger than the layer ({in_dim}→{out_dim}); "
                        f"use at most {min(in_dim, out_dim)}")
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise LoRAError(f"LoRA alpha must be a number (got {alpha!r})") from None
    if not (math.isfinite(a) and a > 0):
        raise LoRAError(f"LoRA alpha must be a positive number (got {alpha!r})")


def expand_targets(targets) -> tuple[str, ...]:
    """Group names and target names → target names in a fixed order (no duplicates)."""
    if isinstance(targets, str):
        targets = [targets]
    wanted: set[str] = set()
    for t in targets or ():
        t = str(t).strip()
        if t in TARGET_GROUPS:
            wanted.update(TARGET_GROUPS[t])
        elif t in ALL_TARGETS:
            wanted.add(t)
        else:
            raise LoRAError(f"unknown LoRA target {t!r}; choose from "
                            f"{', '.join([*TARGET_GROUPS, *ALL_TARGETS])}")
    if not wanted:
        raise LoRAError("choose at least one layer type for LoRA (attention, feed-forward or head)")
    return tuple(t for t in ALL_TARGETS if t in wanted)


def _get(module: nn.Module, path: str) -> nn.Module:
    for part in path.split("."):
        module = module[int(part)] if part.isdigit() else getattr(module, part)
    return module


def _set(module: nn.Module, path: str, value: nn.Module) -> None:
    parent_path, _, last = path.rpartition(".")
    parent = _get(module, parent_path) if parent_path else module
    if last.isdigit():
        parent[int(last)] = value
    else:
        setattr(parent, last, value)


def target_paths(model: nn.Module, targets) -> list[tuple[str, int | None, str]]:
    """(target, layer index or None for the head, module path) for each chosen Linear."""
    names = expand_targets(targets)
    out = []
    for i in range(len(model.trf_blocks)):
        for t in names:
            if t in BLOCK_TARGETS:
                out.append((t, i, f"trf_blocks.{i}.{BLOCK_TARGETS[t]}"))
    if HEAD_TARGET in names:
        out.append((HEAD_TARGET, None, "out_head"))
    return out


def freeze(model: nn.Module) -> nn.Module:
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def apply_lora(model: nn.Module, rank: int, alpha: float, targets=("attention", "feed-forward"),
               generator: torch.Generator | None = None) -> list[str]:
    """Freeze ``model`` and wrap the chosen Linear layers in place; returns the wrapped paths.

    Parameters set trainable *after* this call (e.g. a new classification head) stay trainable.
    ``generator`` makes the A matrices reproducible without touching the global RNG.
    """
    check_rank_alpha(rank, alpha)
    freeze(model)
    wrapped = []
    for _, _, path in target_paths(model, targets):
        layer = _get(model, path)
        if isinstance(layer, LinearWithLoRA):
            raise LoRAError(f"{path} already has LoRA")
        if not isinstance(layer, nn.Linear):
            raise LoRAError(f"{path} is a {type(layer).__name__}, not a Linear layer")
        # A rank above the model width adds nothing a full update could not do (the book's
        # 2-class head with rank 16 is fine: the bound is the input width).
        check_rank_alpha(rank, alpha, layer.in_features, layer.in_features if path == "out_head"
                         else layer.out_features)
        if path == "out_head" and getattr(model, "cfg", None) is not None and model.cfg.tie_weights \
                and layer.weight is model.tok_emb.weight:
            # A tied head shares its weight with the token embedding: merging would change both.
            layer.weight = nn.Parameter(layer.weight.detach().clone(), requires_grad=False)
        with torch.random.fork_rng(devices=[], enabled=generator is not None):
            if generator is not None:
                torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator, device="cpu")))
            wrapper = LinearWithLoRA(layer, rank, alpha)
        wrapper.to(device=layer.weight.device, dtype=layer.weight.dtype)
        _set(model, path, wrapper)
        wrapped.append(path)
    return wrapped


def replace_linear_with_lora(model: nn.Module, rank: int, alpha: float) -> nn.Module:
    """The book's helper: every nn.Linear, recursively (call after freezing the model)."""
    for name, module in model.named_children():
        if isinstance(module, nn.Linear):
            setattr(model, name, LinearWithLoRA(module, rank, alpha))
        elif not isinstance(module, LinearWithLoRA):
            replace_linear_with_lora(module, rank, alpha)
    return model


def lora_layers(model: nn.Module) -> dict[str, LinearWithLoRA]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LinearWithLoRA)}


def merge_lora(model: nn.Module) -> nn.Module:
    for layer in lora_layers(model).values():
        layer.merge()
    return model


def unmerge_lora(model: nn.Module) -> nn.Module:
    for layer in lora_layers(model).values():
        layer.unmerge()
    return model


def unwrap_lora(model: nn.Module) -> nn.Module:
    """Fold every update into its Linear and put that plain ``nn.Linear`` back in the wrapper's
    place: the model is a plain one again (for a checkpoint without LoRA modules)."""
    merge_lora(model)
    for path, layer in lora_layers(model).items():
        _set(model, path, layer.linear)
    return model


@dataclass(frozen=True)
class ParameterCounts:
    total: int        # every parameter, LoRA matrices included
    trainable: int    # requires_grad
    lora: int         # A and B matrices only

    @property
    def trainable_fraction(self) -> float:
        return self.trainable / self.total if self.total else 0.0

    def summary(self) -> str:
        return (f"{self.trainable:,} trainable of {self.total:,} parameters "
                f"({100 * self.trainable_fraction:.2f} %; LoRA matrices {self.lora:,})")


def count_parameters(model: nn.Module) -> ParameterCounts:
    total = trainable = lora = 0
    for name, p in model.named_parameters():
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
        lora += p.numel() if ".lora." in f".{name}" else 0
    return ParameterCounts(total, trainable, lora)


def lora_parameter_count(cfg, rank: int, targets=("all",), head_out: int | None = None) -> int:
    """What apply_lora adds to a GPTModel of ``cfg``: rank·(in + out) per wrapped layer."""
    names = expand_targets(targets)
    d = cfg.emb_dim
    shapes = {"q": (d, d), "k": (d, d), "v": (d, d), "out": (d, d), "ff_in": (d, 4 * d), "ff_out": (4 * d, d)}
    per_block = sum(rank * sum(shapes[t]) for t in names if t in shapes)
    head = rank * (d + (head_out or cfg.vocab_size)) if HEAD_TARGET in names else 0
    return cfg.n_layers * per_block + head


# ---------------------------------------------------------------- what LoRA changed

def update_norms(model: nn.Module, base: nn.Module | None = None) -> dict[tuple[str, int | None], float]:
    """Frobenius norm of each layer's weight update, keyed by (target, layer or None for the head).

    With LoRA the update is scaling·(A·B)ᵀ; for a fully fine-tuned model pass the ``base`` model
    and the update is the weight difference."""
    out: dict[tuple[str, int | None], float] = {}
    with torch.no_grad():
        for t, i, path in target_paths(model, "all"):
            layer = _get(model, path)
            if isinstance(layer, LinearWithLoRA):
                out[(t, i)] = float(torch.linalg.matrix_norm(layer.lora.delta_weight().float()))
            elif base is not None:
                before = _get(base, path)
                if isinstance(before, LinearWithLoRA):
                    before = before.linear
                if before.weight.shape == layer.weight.shape:
                    diff = layer.weight.float() - before.weight.float().to(layer.weight.device)
                    out[(t, i)] = float(torch.linalg.matrix_norm(diff))
    return out


# ---------------------------------------------------------------- base model identity

def _clean_name(name: str) -> str:
    return name.replace(".linear.", ".")


def model_fingerprint(model: nn.Module, skip: tuple[str, ...] = ()) -> str:
    """A short hash of a model's frozen base weights (names, shapes and a strided sample of values).

    LoRA matrices and the names in ``skip`` (e.g. a replaced head) are left out, so the
    fingerprint of a wrapped model equals that of the model it was built from (unmerged)."""
    h = hashlib.sha256()
    items = sorted((_clean_name(k), v) for k, v in model.state_dict().items()
                   if ".lora." not in f".{k}" and not _clean_name(k).startswith(skip))
    seen: set[str] = set()
    for name, tensor in items:
        if name in seen:
            continue
        seen.add(name)
        flat = tensor.detach().reshape(-1)
        step = max(1, flat.numel() // 4096)
        sample = flat[::step][:4096].to("cpu", torch.float32).contiguous()
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(sample.numpy().tobytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------- saving and loading adapters

@dataclass
class AdapterInfo:
    """What an adapter file says about itself (safetensors metadata)."""

    base_model: str
    base_fingerprint: str
    method: str                 # "lora", "full" or "last-block"
    rank: int | None = None
    alpha: float | None = None
    targets: tuple[str, ...] = ()
    head_classes: int | None = None   # a replaced classification head's size
    extra: dict = field(default_factory=dict)  # task, labels, settings, scores...

    def to_metadata(self) -> dict[str, str]:
        return {
            "format": ADAPTER_FORMAT, "version": ADAPTER_VERSION,
            "base_model": self.base_model, "base_fingerprint": self.base_fingerprint,
            "method": self.method, "rank": "" if self.rank is None else str(self.rank),
            "alpha": "" if self.alpha is None else repr(float(self.alpha)),
            "targets": ",".join(self.targets),
            "head_classes": "" if self.head_classes is None else str(self.head_classes),
            "extra": json.dumps(self.extra),
        }

    @classmethod
    def from_metadata(cls, md: dict[str, str]) -> "AdapterInfo":
        if (md or {}).get("format") != ADAPTER_FORMAT:
            raise LoRAError("this file is not an LLM Explorer adapter (no adapter metadata)")
        try:
            return cls(base_model=md["base_model"], base_fingerprint=md["base_fingerprint"],
                       method=md["method"], rank=int(md["rank"]) if md.get("rank") else None,
                       alpha=float(md["alpha"]) if md.get("alpha") else None,
                       targets=tuple(t for t in md.get("targets", "").split(",") if t),
                       head_classes=int(md["head_classes"]) if md.get("head_classes") else None,
                       extra=json.loads(md.get("extra") or "{}"))
        except (KeyError, ValueError, json.JSONDecodeError) as exc:
            raise LoRAError(f"the adapter's metadata is damaged ({exc})") from None


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors an adapter holds: every trainable parameter (LoRA A/B, a new head, ...)."""
    return {_clean_name(n) if ".lora." not in f".{n}" else n: p.detach().to("cpu").contiguous()
            for n, p in model.named_parameters() if p.requires_grad}


def save_adapter(path: str | os.PathLike, model: nn.Module, info: AdapterInfo,
                 tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """Write the adapter atomically (a crash leaves the previous file intact)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = tensors if tensors is not None else adapter_state(model)
    if not state:
        raise LoRAError("the model has no trainable tensors to save")
    with atomic_file(path) as tmp:
        save_file({k: v.detach().to("cpu").contiguous() for k, v in state.items()}, str(tmp),
                  metadata=info.to_metadata())
    return path


def read_adapter(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], AdapterInfo]:
    """Tensors and info of an adapter file (safetensors only; nothing is unpickled)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            info = AdapterInfo.from_metadata(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except LoRAError:
        raise
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise LoRAError(f"cannot read the adapter file: {exc}") from None
    return tensors, info


def check_adapter_base(base_model: nn.Module, info: AdapterInfo) -> None:
    """Refuse an adapter trained on another base model (its fingerprint differs; a classifier's
    new head is left out of the comparison)."""
    found = model_fingerprint(base_model, skip=("out_head",) if info.head_classes is not None else ())
    if found != info.base_fingerprint:
        raise LoRAError(f"this adapter was trained on {info.base_model!r} (fingerprint "
                        f"{info.base_fingerprint}); the current model's fingerprint is {found}. "
                        "Load the adapter's base model first.")


def apply_adapter(base_model: nn.Module, tensors: dict[str, torch.Tensor], info: AdapterInfo,
                  check_identity: bool = True) -> nn.Module:
    """A new model: a copy of ``base_model`` with the adapter applied (the base is left alone).

    Refuses an adapter trained on another base model (``check_adapter_base``)."""
    import copy

    if check_identity:
        check_adapter_base(base_model, info)
    model = copy.deepcopy(base_model)
    if info.head_classes is not None:
        model.out_head = nn.Linear(model.cfg.emb_dim, info.head_classes,
                                   device=model.out_head.weight.device, dtype=model.out_head.weight.dtype)
    if info.method == "lora":
        apply_lora(model, info.rank, info.alpha, info.targets)
    else:
        freeze(model)
    own = dict(model.named_parameters())
    own.update({_clean_name(k): v for k, v in list(own.items())})
    missing = [k for k in tensors if k not in own]
    if missing:
        raise LoRAError(f"the adapter does not fit this model: unknown tensors {missing[:3]}")
    with torch.no_grad():
        for name, value in tensors.items():
            target = own[name]
            if target.shape != value.shape:
                raise LoRAError(f"the adapter does not fit this model: {name} is {tuple(value.shape)}, "
                                f"the model's is {tuple(target.shape)}")
            target.copy_(value.to(target.dtype))
    return model.eval()


def load_adapter(path: str | os.PathLike, base_model: nn.Module, check_identity: bool = True
                 ) -> tuple[nn.Module, AdapterInfo]:
    tensors, info = read_adapter(path)
    return apply_adapter(base_model, tensors, info, check_identity), info
