"""Where models come from, loaded once and shared by every tab and user.

A model name is one of:
- a built-in name: a checkpoint directory under ``assets/models/`` (e.g. ``pydoc-gpt``);
- ``untrained:<preset>``: a seeded random init of a preset (``untrained:gpt2-small``);
- a GPT-2 name or Hub repo id (``gpt2``, ``openai-community/gpt2-medium``);
- a local directory in Hugging Face's GPT-2 layout (what the app writes; or our older format),
  unless the server is public (see ``hosting``);
- ``saved:<owner>/<run>``: a checkpoint a visitor saved from the Pretrain tab, or
  ``published:<run>``: one the operator published (see ``runs``).

Every model is checked against the memory budget (see ``budget``) before a tensor exists, and
every failure is a ``ModelLoadError`` with a message fit for the UI.
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import budget, hosting, runs
from .checkpoint import (GPT2_HUB_IDS, CheckpointError, HubUnavailable, Progress, download_from_hub, load_checkpoint,
                         read_config)
from .config import PRESET_LABELS, PRESETS, GPTConfig
from .hf_format import gpt_config_from_hf
from .model import GPTModel, build_untrained
from .paths import explorer_home
from .tokenizers import BPETokenizer, gpt2_tokenizer

ASSETS = Path(__file__).resolve().parent.parent / "assets"
BUILTIN_DIR = ASSETS / "models"
# Checkpoints users save in the app (under LLM_EXPLORER_HOME, /data/llm-explorer on a Space).
USER_DIR = explorer_home() / "checkpoints"
UNTRAINED = "untrained:"
DEFAULT_BUILTIN = "pydoc-gpt"
DEFAULT_INSTRUCT = "pydoc-gpt-instruct"
GPT2_DEFAULT = "gpt2"  # GPT-2 small (openai-community/gpt2), the default wherever it is cached
# GPT-2 small tuned on Alpaca-GPT4 with the Alpaca prompt the book uses (MIT, safetensors): Chat's
# default wherever it is cached (README's preload_from_hub puts it there on a Space).
INSTRUCT_GPT2 = "vicgalle/gpt2-alpaca-gpt4"
MAX_CACHED = 6  # models kept in memory, at most...
# ...and at most this many bytes of weights (GPT-2 XL alone is 6.2 GB in fp32); the model just
# loaded always stays, so one model larger than the budget still works.
MAX_CACHED_BYTES = int(float(os.environ.get("LLM_EXPLORER_CACHE_GB", "8")) * 2**30)


class ModelLoadError(RuntimeError):
    """A model that cannot be loaded, with a message fit for the UI."""


@dataclass
class ModelBundle:
    name: str
    model: GPTModel
    tokenizer: BPETokenizer
    config: GPTConfig
    source: str  # "built-in", "untrained", "hub", "local", "saved"
    meta: dict = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)  # for hooks/train mode

    @property
    def num_parameters(self) -> int:
        return self.model.num_parameters()

    def summary(self) -> str:
        c = self.config
        return (f"{self.name} · {self.source} · {self.num_parameters / 1e6:.2f}M parameters · "
                f"{c.n_layers} layers, {c.n_heads} heads, {c.emb_dim} dims, context {c.context_length}, "
                f"vocab {c.vocab_size}{' (tied head)' if c.tie_weights else ''}")

    def encode(self, text: str) -> torch.Tensor:
        """Text → LongTensor [1, T] on the model's device."""
        return torch.tensor([self.tokenizer.encode(text)], dtype=torch.long, device=self.model.device)


_lock = threading.Lock()
_name_locks: dict[str, threading.Lock] = {}
_cache: "OrderedDict[str, ModelBundle]" = OrderedDict()


def builtin_names() -> list[str]:
    if not BUILTIN_DIR.is_dir():
        return []
    return sorted(p.name for p in BUILTIN_DIR.iterdir() if (p / "config.json").is_file())


def in_hf_cache(repo_id: str, files: tuple[str, ...] = ("config.json", "model.safetensors")) -> bool:
    """Whether every one of ``files`` of ``repo_id`` is in the local Hugging Face cache
    (HF_HUB_CACHE, which a Space's ``preload_from_hub`` fills). Never asks the network."""
    try:
        from huggingface_hub import try_to_load_from_cache
        return all(isinstance(try_to_load_from_cache(repo_id, f), str) for f in files)
    except (ImportError, OSError, ValueError):  # no library, unreadable cache, odd repo id
        return False


def default_model_choice() -> tuple[str, str]:
    """(name, why) of the model the app opens on: GPT-2 small when it is in the local Hugging
    Face cache, else the shipped pydoc-gpt (an untrained tiny GPT when nothing is shipped)."""
    if in_hf_cache(GPT2_HUB_IDS[GPT2_DEFAULT]):
        return GPT2_DEFAULT, "GPT-2 small, found in the local Hugging Face cache"
    names = builtin_names()
    reason = "GPT-2 is not in the local cache"
    if DEFAULT_BUILTIN in names:
        return DEFAULT_BUILTIN, f"the shipped {DEFAULT_BUILTIN}: {reason}"
    if names:
        return names[0], f"the shipped {names[0]}: {reason}"
    return UNTRAINED + "tiny", f"an untrained tiny GPT: {reason} and no model is shipped"


def default_model_name() -> str:
    return default_model_choice()[0]


def default_chat_model() -> str:
    """Chat's default: the instruction-tuned GPT-2 when cached, else the shipped instruct model."""
    if in_hf_cache(INSTRUCT_GPT2):
        return INSTRUCT_GPT2
    return DEFAULT_INSTRUCT if DEFAULT_INSTRUCT in builtin_names() else default_model_name()


def model_choices(owner: str | None = None) -> list[tuple[str, str]]:
    """(label, name) pairs for pickers: built-ins, the owner's saved runs and the published ones,
    untrained presets (marked when too large for this server), GPT-2 sizes."""
    out = [(f"{n} (built-in)", n) for n in builtin_names()]
    out += [(runs.run_label(n), n) for n in runs.saved_names(owner) + runs.published_names()]
    out += [(f"untrained {PRESET_LABELS[k]}" + ("" if budget.fits(cfg) else " — too large for this server"),
             UNTRAINED + k) for k, cfg in PRESETS.items()]
    out += [(f"{k} from the Hugging Face Hub (needs network or cache)", k) for k in GPT2_HUB_IDS]
    return out


def check_typed_name(name, owner: str | None) -> str:
    """A name a visitor typed or sent: cleaned, and refused when it is someone else's saved run."""
    try:
        name = hosting.clean_name(name)
        runs.check_owner(name, owner)
    except ValueError as exc:
        raise ModelLoadError(_sentence(str(exc))) from None
    return name


def _sentence(text: str) -> str:
    text = text.strip()
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def _hub_config_check(folder: Path) -> None:
    budget.check_size(gpt_config_from_hf(read_config(folder)))


def _load_uncached(name: str, progress: Progress | None, device) -> ModelBundle:
    if name.startswith(UNTRAINED):
        key = name.removeprefix(UNTRAINED)
        if key not in PRESETS:
            raise ModelLoadError(f"unknown preset {key[:40]!r}; choose one of {', '.join(PRESETS)}")
        with budget.reserve(PRESETS[key]):
            model = build_untrained(PRESETS[key]).to(device)
        return ModelBundle(name, model, gpt2_tokenizer(), model.cfg, "untrained",
                           {"description": "random weights (seed 123): what a GPT says before training"})
    if name in builtin_names():
        path, source = BUILTIN_DIR / name, "built-in"
    elif name.startswith((runs.SAVED, runs.PUBLISHED)):
        path, source = runs.resolve(name), "saved"
    elif (local := hosting.local_folder(name)) is not None:
        path, source = local, "local"
    elif hosting.looks_like_path(name):
        if not hosting.local_models_allowed():
            raise ModelLoadError(hosting.LOCAL_REFUSED)
        raise ModelLoadError(f"{name[:80]!r} is not a folder holding a model, a built-in model, a preset "
                             "or a Hub repo id (owner/name)")
    elif name in GPT2_HUB_IDS or hosting.HUB_ID.match(name):
        repo = GPT2_HUB_IDS.get(name, name)
        if not in_hf_cache(repo) and not hosting.hub_repo_allowed(repo, set(GPT2_HUB_IDS.values()) | {INSTRUCT_GPT2}):
            raise ModelLoadError(hosting.hub_refused(repo))
        try:
            path, source = download_from_hub(name, progress, check_config=_hub_config_check), "hub"
        except HubUnavailable as exc:
            raise ModelLoadError(str(exc)) from None
    else:
        where = " or a directory" if hosting.local_models_allowed() else ""
        raise ModelLoadError(f"{name[:80]!r} is not a built-in model, a preset, a Hub repo id{where}")
    model, tok, meta = load_checkpoint(path, device=device)
    return ModelBundle(name, model, tok, model.cfg, source, meta)


def _load_explained(name: str, progress: Progress | None, device) -> ModelBundle:
    """_load_uncached with every failure turned into a ModelLoadError that says why."""
    try:
        return _load_uncached(name, progress, device)
    except ModelLoadError:
        raise
    except runs.RunError as exc:
        raise ModelLoadError(_sentence(str(exc))) from None
    except (budget.BudgetError, CheckpointError) as exc:
        raise ModelLoadError(_sentence(f"cannot load {name[:80]}: {exc}")) from None
    except Exception as exc:  # OSError, a library's validation error, a torch RuntimeError...
        detail = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise ModelLoadError(_sentence(f"cannot load {name[:80]}: {type(exc).__name__}"
                                       + (f": {detail}" if detail else ""))) from None


def load_model(name_or_path: str | None = None, progress: Progress | None = None,
               device: str | torch.device | None = None) -> ModelBundle:
    """Load (once) and return a model bundle: ``.model``, ``.tokenizer``, ``.config``.

    ``None`` gives the default: the shipped built-in model, or an untrained tiny GPT
    when no built-in model is installed.
    """
    if isinstance(name_or_path, os.PathLike):
        name_or_path = os.fspath(name_or_path)
    try:
        name = hosting.clean_name(name_or_path or default_model_name())
    except ValueError as exc:
        raise ModelLoadError(_sentence(str(exc))) from None
    device = torch.device(device or "cpu")
    key = f"{name}@{device}"
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
        name_lock = _name_locks.setdefault(key, threading.Lock())
    with name_lock:  # two users asking for the same model load it once
        with _lock:
            if key in _cache:
                return _cache[key]
        try:
            bundle = _load_explained(name, progress, device)
        except ModelLoadError:
            _name_locks.pop(key, None)  # names that fail are not kept (a stranger can send millions)
            raise
        with _lock:
            _cache[key] = bundle
            _evict()
        return bundle


def _weight_bytes(bundle: ModelBundle) -> int:
    return sum(p.numel() * p.element_size() for p in bundle.model.parameters())


def _evict() -> None:
    """Drop the least recently used models while over the count or the byte budget."""
    while len(_cache) > 1 and (len(_cache) > MAX_CACHED
                               or sum(_weight_bytes(b) for b in _cache.values()) > MAX_CACHED_BYTES):
        _cache.popitem(last=False)


def _make_room(nbytes: int) -> None:
    """Under memory pressure: drop cached models, oldest first, until ``nbytes`` more fit."""
    import gc

    with _lock:
        while _cache and budget.held_bytes() + nbytes > budget.budget_bytes():
            _cache.popitem(last=False)
            gc.collect()


budget.on_pressure(_make_room)


def cached_models() -> list[str]:
    """Names of the models held in memory, least recently used first."""
    with _lock:
        return [k.rsplit("@", 1)[0] for k in _cache]


def forget(name: str) -> None:
    """Drop a model from the cache (after a checkpoint under that name was rewritten)."""
    with _lock:
        for key in [k for k in _cache if k.rsplit("@", 1)[0] == name]:
            del _cache[key]
