"""Fine-tuning (chapters 6-7 and appendix E) as generators of metric events.

``finetune(base_model, tokenizer, data, settings)`` trains a *copy* of the base model (the
shared model is never touched) with the same step loop as pre-training
(``training.run_training``) and yields a ``TrainEvent`` after every step; every
``eval_interval`` steps the event carries the evaluation, and the last one (``done``) carries
a ``FinetuneResult``: the tuned model, its adapter, curves, and the final scores. A task
(``ClassificationTask`` / ``InstructionTask``) prepares its data and supplies the loss, the
evaluation and the final scores.

- Classification (7.1): the output head becomes ``Linear(emb_dim, num_classes)``; each text
  is followed by one end-of-text token and batches are padded with end-of-text; the loss and
  accuracy use the logits at that appended token, the last real position, so a text gets the
  same prediction alone or in a padded batch (the book pads every text to the longest and
  reads the last position: the same thing for the longest text).
- Instruction tuning (7.2): the book's prompt and collate, next-token cross-entropy with
  padding (and optionally the prompt) ignored; at each evaluation the model answers a few
  held-out instructions; at the end held-out examples are scored before vs after tuning
  (exact match for computed answers, word-level similarity otherwise).
- Methods: ``lora`` (appendix E: frozen model + low-rank updates on the chosen layers; a new
  classification head is trained in full), ``last-block`` (the book's 7.1 recipe: last
  block, final norm and head), ``full`` (every weight).

Caps on steps and time are enforced inside the loop; a NaN/inf loss or gradient stops the run
with ``status="diverged"``: the loop rolls the copy back to its last evaluation with finite
losses, and the result is that model (its steps and validation loss those of the evaluation).
With no such evaluation there is no result, so a previously stored one is never replaced by a
broken model.
"""
from __future__ import annotations

import copy
import difflib
import functools
import math
import random
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from .generation import generate
from .instruct_data import (
    ClassificationData, InstructionData, InstructionDataset, extract_response, format_input,
    instruction_collate, split_classification, split_instructions,
)
from .lora import (
    AdapterInfo, LoRAError, ParameterCounts, apply_lora, check_rank_alpha, count_parameters,
    expand_targets, freeze, model_fingerprint, save_adapter, update_norms,
)
from .device import pin_host_memory, to_device
from .model import eval_mode
from .training import (
    StopCheck, TrainEvent, TrainingTask, should_stop, calc_loss_batch, calc_loss_loader, cosine_lr, make_optimizer,
    pick_device, run_training,
)

TASKS = ("classification", "instruction")
METHODS = ("lora", "last-block", "full")

# Server-side caps (the UI's sliders stay below these; direct API calls cannot exceed them).
MAX_STEPS = 5000
MAX_BATCH = 64
MAX_SECONDS = 3600.0
LORA_SCALINGS = ("alpha/rank", "alpha")
MIN_INSTRUCTIONS = 10  # the 85/10/5 split of fewer leaves the test part empty
IGNORE_INDEX = -100    # targets the loss skips (padding, and the prompt when masked): cross_entropy's default


class FinetuneError(ValueError):
    """Settings or data that cannot be trained on (the message says what to change)."""


@dataclass
class FinetuneSettings:
    task: str = "classification"
    method: str = "lora"
    rank: int = 8
    alpha: float = 16.0
    lora_scaling: str = "alpha/rank"  # update × α/r (peft's); "alpha": × α, the book's LoRALayer
    targets: tuple[str, ...] = ("attention", "feed-forward")
    epochs: int = 1
    max_steps: int = 200            # the run ends at epochs or max_steps, whichever is first
    batch_size: int = 8
    lr: float = 5e-4
    cosine: bool = False            # decay lr to lr/10 along the run (by steps or by the clock, whichever is further)
    weight_decay: float = 0.1
    eval_interval: int = 10
    eval_batches: int = 4
    seed: int = 123
    max_seconds: float | None = 300.0
    max_length: int | None = None   # tokens per example (None: the model's context length)
    mask_instruction: bool = False  # instruction tuning: loss on the response only
    rehearsal: float = 0.0          # instruction tuning: replay data.rehearsal texts, this many per training entry
    grad_clip: float | None = 1.0
    n_samples: int = 3              # held-out answers shown at each evaluation
    n_score: int = 20               # held-out examples scored before vs after
    sample_tokens: int = 32
    max_eval_examples: int = 400    # final accuracy / confusion matrix per split

    @property
    def peft_alpha(self) -> float:
        """α in the α/r convention (LoRALayer's and peft's) that gives this run's update scale:
        α itself, or α·r for the book's scaling (its update is α·x·A·B)."""
        return float(self.alpha) * (self.rank if self.lora_scaling == "alpha" else 1)

    def problems(self) -> list[str]:
        out = []
        if self.task not in TASKS:
            out.append(f"task must be one of {', '.join(TASKS)} (got {self.task!r})")
        if self.method not in METHODS:
            out.append(f"method must be one of {', '.join(METHODS)} (got {self.method!r})")
        if self.method == "lora":
            if self.lora_scaling not in LORA_SCALINGS:
                out.append(f"LoRA scaling must be one of {', '.join(LORA_SCALINGS)} (got {self.lora_scaling!r})")
            try:
                check_rank_alpha(self.rank, self.alpha)
                expand_targets(self.targets)
            except LoRAError as exc:
                out.append(str(exc))
        if not 1 <= int(self.epochs) <= 100:
            out.append(f"epochs must be between 1 and 100 (got {self.epochs})")
        if not 1 <= int(self.max_steps) <= MAX_STEPS:
            out.append(f"steps must be between 1 and {MAX_STEPS} (got {self.max_steps})")
        if not 0 <= self.rehearsal <= 10:
            out.append(f"rehearsal must be between 0 and 10 texts per training entry (got {self.rehearsal})")
        if not 1 <= int(self.batch_size) <= MAX_BATCH:
            out.append(f"batch size must be between 1 and {MAX_BATCH} (got {self.batch_size})")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and 0 < self.lr <= 1):
            out.append(f"learning rate must be a number in (0, 1] (got {self.lr})")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            out.append(f"weight decay must be ≥ 0 (got {self.weight_decay})")
        if int(self.eval_interval) < 1 or int(self.eval_batches) < 1:
            out.append("eval interval and eval batches must be at least 1")
        if self.max_seconds is not None and not 0 < self.max_seconds <= MAX_SECONDS:
            out.append(f"the time limit must be between 0 and {MAX_SECONDS:.0f} s (got {self.max_seconds})")
        if self.max_length is not None and int(self.max_length) < 4:
            out.append(f"max length must be at least 4 tokens (got {self.max_length})")
        return out


@dataclass
class FinetuneResult:
    task: str
    method: str
    model: nn.Module                 # the tuned copy, eval mode
    tokenizer: object
    info: AdapterInfo
    counts: ParameterCounts
    history: list[dict]              # evaluation events as dicts
    status: str
    reason: str
    label_names: list[str] = field(default_factory=list)
    max_length: int = 0
    accuracy: dict[str, float] = field(default_factory=dict)      # classification: per split
    confusion: dict[str, list[list[int]]] = field(default_factory=dict)
    examples: list[dict] = field(default_factory=list)            # classification: val predictions
    val_loss: float | None = None
    scores: dict[str, dict] = field(default_factory=dict)         # instruction: before / after
    comparisons: list[dict] = field(default_factory=list)         # instruction: base vs tuned answers
    norms: dict = field(default_factory=dict)                     # (target, layer) → update norm
    created: float = field(default_factory=time.time)

    def save_adapter(self, path: str | Path) -> Path:
        """The single-file adapter of earlier versions (safetensors with our metadata)."""
        return save_adapter(path, self.model, self.info)

    def save_hf(self, out_dir: str | Path) -> Path:
        """Hugging Face's formats: a peft adapter directory for LoRA, the whole tuned model otherwise."""
        from .export import export_finetuned

        return export_finetuned(self.model, self.tokenizer, self.info, out_dir)

    def predict_proba(self, text: str) -> dict[str, float]:
        return predict_proba(self.model, self.tokenizer, text, self.label_names, self.max_length)

    def respond(self, entry: dict, max_new_tokens: int = 64) -> str:
        return respond(self.model, self.tokenizer, entry, max_new_tokens)


# ---------------------------------------------------------------- building the model to train

def pad_id_of(tokenizer) -> int:
    eot = getattr(tokenizer, "eot_id", None)
    if eot is None:
        raise FinetuneError("the model's tokenizer has no <|endoftext|> token to pad with")
    return int(eot)


def prepare_model(base_model: nn.Module, settings: FinetuneSettings, num_classes: int | None = None,
                  device=None) -> nn.Module:
    """A trainable copy of ``base_model``: new head for classification, then the method's freezing."""
    model = copy.deepcopy(base_model).to(pick_device(device))
    gen = torch.Generator().manual_seed(int(settings.seed))
    if num_classes is not None:
        head = nn.Linear(model.cfg.emb_dim, num_classes)
        with torch.no_grad():  # nn.Linear's own init, drawn from our generator
            bound = 1 / math.sqrt(model.cfg.emb_dim)
            head.weight.copy_(torch.rand(head.weight.shape, generator=gen) * 2 * bound - bound)
            head.bias.copy_(torch.rand(head.bias.shape, generator=gen) * 2 * bound - bound)
        model.out_head = head.to(model.tok_emb.weight.device)
    if settings.method == "lora":
        targets = expand_targets(settings.targets)
        if num_classes is not None:
            targets = tuple(t for t in targets if t != "head")  # the new head trains in full
            if not targets:
                raise FinetuneError("LoRA on the head alone leaves nothing to adapt for classification "
                                    "(the new head is trained in full): add attention or feed-forward")
        apply_lora(model, settings.rank, settings.peft_alpha, targets, generator=gen)
        if num_classes is not None:
            model.out_head.requires_grad_(True)
    elif settings.method == "last-block":
        freeze(model)
        for module in (model.trf_blocks[-1], model.final_norm, model.out_head):
            module.requires_grad_(True)
    else:
        model.requires_grad_(True)
    return model


def planned_counts(cfg, settings: FinetuneSettings, num_classes: int | None = None) -> ParameterCounts:
    """Trainable vs total parameters of a run before it starts (built on the meta device: no memory)."""
    from .model import GPTModel

    with torch.device("meta"):
        model = GPTModel(cfg)
        return count_parameters(prepare_model(model, settings, num_classes, device="meta"))


@functools.lru_cache(maxsize=8)
def book_lora_counts(rank: int = 16) -> dict[str, int]:
    """Appendix E's setup and this app's, counted on GPT-2 small as loaded from OpenAI's weights
    (qkv bias) with a new 2-class head, built on the meta device (no memory): ``before`` is what
    trains before freezing; ``book`` what trains after the book's freeze + replace_linear_with_lora
    on every Linear, the new head included; ``ours`` what this app trains at the same rank (LoRA
    on every block's Linear layers, the new head trained in full). Neither depends on the scaling."""
    import dataclasses

    from .config import PRESETS
    from .lora import replace_linear_with_lora
    from .model import GPTModel

    cfg = dataclasses.replace(PRESETS["gpt2-small"], qkv_bias=True)
    with torch.device("meta"):
        model = GPTModel(cfg)
        model.out_head = nn.Linear(cfg.emb_dim, 2)
        before = count_parameters(model).trainable
        replace_linear_with_lora(freeze(model), rank, rank)
        book = count_parameters(model).trainable
    ours = planned_counts(cfg, FinetuneSettings(method="lora", rank=rank, alpha=rank, targets=("all",)), 2)
    return {"before": before, "book": book, "ours": ours.trainable}


def adapter_info(base_name: str, fingerprint: str, settings: FinetuneSettings, num_classes: int | None,
                 extra: dict) -> AdapterInfo:
    lora = settings.method == "lora"
    targets = expand_targets(settings.targets) if lora else ()
    if lora and num_classes is not None:
        targets = tuple(t for t in targets if t != "head")
    return AdapterInfo(base_model=base_name, base_fingerprint=fingerprint, method=settings.method,
                       rank=settings.rank if lora else None, alpha=settings.peft_alpha if lora else None,
                       targets=targets, head_classes=num_classes, extra=extra)


# ---------------------------------------------------------------- classification pieces

def encode_for_classification(tokenizer, text: str, max_length: int) -> list[int]:
    """Text ids (special-token literals stay text), cut to leave room for one end-of-text."""
    ids = tokenizer.encode_ordinary(text)[: max_length - 1]
    return ids + [pad_id_of(tokenizer)]


def classification_batches(encoded: list[list[int]], labels: list[int], batch_size: int, pad_id: int,
                           shuffle: bool, generator: torch.Generator | None = None, drop_last: bool = False,
                           pin_memory: bool = False):
    """Batches (inputs [B, T] padded with end-of-text, index of each text's last token [B], labels [B]);
    in page-locked memory with ``pin_memory`` (batches bound for a CUDA GPU)."""
    order = torch.randperm(len(encoded), generator=generator).tolist() if shuffle else list(range(len(encoded)))
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        if drop_last and len(idx) < batch_size:
            break
        longest = max(len(encoded[i]) for i in idx)
        inputs = torch.full((len(idx), longest), pad_id, dtype=torch.long)
        for row, i in enumerate(idx):
            inputs[row, :len(encoded[i])] = torch.tensor(encoded[i])
        batch = inputs, torch.tensor([len(encoded[i]) - 1 for i in idx]), torch.tensor([labels[i] for i in idx])
        yield tuple(t.pin_memory() for t in batch) if pin_memory else batch


def classification_logits(model: nn.Module, inputs: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    logits = model(inputs)                                        # [B, T, classes]
    return logits[torch.arange(inputs.shape[0], device=logits.device), last.to(logits.device)]


def calc_classification_batch(model, inputs, last, labels, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean cross-entropy, number correct) on the last-token logits."""
    logits = classification_logits(model, to_device(inputs, device), last)
    labels = to_device(labels, device)
    return F.cross_entropy(logits, labels), (logits.argmax(-1) == labels).sum()


@torch.no_grad()
def predict_proba(model: nn.Module, tokenizer, text: str, label_names: list[str], max_length: int) -> dict[str, float]:
    """Class probabilities for one text (softmax of the last-token logits)."""
    ids = torch.tensor([encode_for_classification(tokenizer, text, max_length)], device=model.tok_emb.weight.device)
    with eval_mode(model):
        probs = torch.softmax(model(ids)[0, -1].float(), dim=-1)
    return {name: float(p) for name, p in zip(label_names, probs)}


@torch.no_grad()
def evaluate_classifier(model, encoded, labels, num_classes: int, batch_size: int, pad_id: int, device,
                        limit: int | None = None) -> tuple[float, float, list[list[int]]]:
    """(mean loss, accuracy, confusion matrix [true][predicted]) over the first ``limit`` examples."""
    n = len(encoded) if limit is None else min(limit, len(encoded))
    confusion = [[0] * num_classes for _ in range(num_classes)]
    if n == 0:
        return float("nan"), float("nan"), confusion
    total_loss = 0.0
    for inputs, last, y in classification_batches(encoded[:n], labels[:n], batch_size, pad_id, shuffle=False):
        logits = classification_logits(model, to_device(inputs, device), last)
        total_loss += F.cross_entropy(logits, to_device(y, device), reduction="sum").item()
        for t, p in zip(y.tolist(), logits.argmax(-1).tolist()):
            confusion[t][p] += 1
    correct = sum(confusion[i][i] for i in range(num_classes))
    return total_loss / n, correct / n, confusion


# ---------------------------------------------------------------- instruction pieces

def normalise_answer(text: str) -> str:
    return " ".join(text.lower().strip().rstrip(".").split())


def answer_score(response: str, expected: str, check: str = "similar") -> float:
    """1/0 exact match (after normalising case, spaces, a final period) for computed answers;
    otherwise the similarity of the word sequences (difflib's ratio, 0..1)."""
    a, b = normalise_answer(response), normalise_answer(expected)
    if check == "exact":
        return float(a == b)
    return difflib.SequenceMatcher(None, re.findall(r"\w+|[^\w\s]", a), re.findall(r"\w+|[^\w\s]", b)).ratio()


@torch.no_grad()
def respond(model: nn.Module, tokenizer, entry: dict, max_new_tokens: int = 64) -> str:
    """The model's greedy answer to an instruction (stops at end-of-text)."""
    prompt = format_input(entry) + "\n\n### Response:\n"
    ids = tokenizer.encode_ordinary(prompt)
    ctx = model.cfg.context_length
    room = ctx - 1
    ids = ids[-room:]
    new = max(1, min(max_new_tokens, ctx - len(ids)))
    idx = torch.tensor([ids], device=model.tok_emb.weight.device)
    out = generate(model, idx, new, ctx, temperature=0.0, eos_id=getattr(tokenizer, "eot_id", None))
    return extract_response(tokenizer.decode(out[0, len(ids):].tolist()), "")


def score_responses(model, tokenizer, entries: list[dict], max_new_tokens: int,
                    stop: StopCheck = None) -> tuple[dict, list[str]]:
    """Answers to ``entries`` and their scores: exact-match rate, mean similarity, overall (0-100)."""
    answers, exact, similar = [], [], []
    for e in entries:
        if should_stop(stop):
            break
        ans = respond(model, tokenizer, e, max_new_tokens)
        answers.append(ans)
        check = e.get("check", "similar")
        (exact if check == "exact" else similar).append(answer_score(ans, e["output"], check))
    all_scores = exact + similar
    return {
        "n": len(all_scores),
        "exact_match": sum(exact) / len(exact) if exact else None, "n_exact": len(exact),
        "similarity": sum(similar) / len(similar) if similar else None, "n_similar": len(similar),
        "score": 100 * sum(all_scores) / len(all_scores) if all_scores else None,
    }, answers


# ---------------------------------------------------------------- each task's data, loss and evaluation

class ClassificationBatches:
    """The training split as padded batches: a new shuffled order per ``iter()`` (one epoch),
    drawn from ``generator``; page-locked with ``pin_memory`` (batches bound for a CUDA GPU)."""

    def __init__(self, encoded: list[list[int]], labels: list[int], batch_size: int, pad_id: int,
                 generator: torch.Generator, pin_memory: bool = False):
        self.encoded, self.labels, self.batch_size, self.pad_id = encoded, labels, batch_size, pad_id
        self.generator, self.pin_memory = generator, pin_memory

    def __len__(self) -> int:
        return math.ceil(len(self.encoded) / self.batch_size)

    def __iter__(self):
        return classification_batches(self.encoded, self.labels, self.batch_size, self.pad_id, True, self.generator,
                                      pin_memory=self.pin_memory)


class ClassificationTask:
    """Chapter 6's data made ready to train on: the splits encoded (one appended end-of-text each),
    shuffled batches, the loss at the appended token, and the evaluation (loss and accuracy)."""

    def __init__(self, data: ClassificationData, tokenizer, s: FinetuneSettings, max_len: int, device=None):
        self.data, self.tokenizer, self.s, self.max_len = data, tokenizer, s, max_len
        self.pad_id = pad_id_of(tokenizer)
        self.num_classes = len(data.label_names)
        self.split = split_classification(data, seed=s.seed)
        self.enc = {k: [encode_for_classification(tokenizer, data.texts[i], max_len) for i in idx]
                    for k, idx in self.split.items()}
        self.lab = {k: [data.labels[i] for i in idx] for k, idx in self.split.items()}
        if len(self.enc["train"]) < 1 or len(self.enc["val"]) < 1:
            raise FinetuneError(f"the data set has {len(data)} examples: too few to split into training and "
                                "validation (use at least 10)")
        if len({*self.lab["train"]}) < 2:
            raise FinetuneError("the training split has only one class; use a data set with every class represented")
        self.batches = ClassificationBatches(self.enc["train"], self.lab["train"], s.batch_size, self.pad_id,
                                             torch.Generator().manual_seed(int(s.seed)),
                                             pin_memory=pin_host_memory(device))

    @staticmethod
    def loss_terms(batch) -> int:
        """How many terms a batch's mean loss averages: its examples."""
        return int(batch[0].shape[0])

    @staticmethod
    def batch_loss(model, batch, device) -> torch.Tensor:
        return calc_classification_batch(model, batch[0], batch[1], batch[2], device)[0]

    def evaluate(self, model, device) -> dict:
        s, n_eval = self.s, self.s.eval_batches * self.s.batch_size
        out = {}
        for split in ("train", "val"):
            loss, acc, _ = evaluate_classifier(model, self.enc[split], self.lab[split], self.num_classes,
                                               s.batch_size, self.pad_id, device, n_eval)
            out[f"{split}_loss"], out[f"{split}_acc"] = loss, acc
        return out

    def before_training(self, model, stop: StopCheck) -> None:
        """Nothing to measure before training (the first evaluation is the untuned accuracy)."""

    def fill_result(self, result: "FinetuneResult", model, device) -> dict:
        """Accuracy and confusion on every split, predictions on a few validation texts."""
        s, data = self.s, self.data
        result.label_names = list(data.label_names)
        for k in ("train", "val", "test"):
            if self.enc[k]:
                _, acc, conf = evaluate_classifier(model, self.enc[k], self.lab[k], self.num_classes, s.batch_size,
                                                   self.pad_id, device, s.max_eval_examples)
                result.accuracy[k], result.confusion[k] = acc, conf
        result.examples = [dict(text=data.texts[i], label=data.label_names[data.labels[i]],
                                probs=result.predict_proba(data.texts[i])) for i in self.split["val"][:8]]
        return {"labels": result.label_names, "max_length": self.max_len, "accuracy": result.accuracy}


def rehearsal_pieces(texts, tokenizer, max_tokens: int) -> list[list[int]]:
    """Each text's token ids, cut after its last whole paragraph that fits ``max_tokens`` (the
    collate appends end-of-text, which should follow a paragraph, not a broken sentence);
    texts whose first two paragraphs do not fit are left out."""
    out = []
    for text in texts:
        paragraphs = text.split("\n\n")
        kept, ids = 0, []
        for k in range(1, len(paragraphs) + 1):
            candidate = tokenizer.encode_ordinary("\n\n".join(paragraphs[:k]))
            if len(candidate) > max_tokens:
                break
            kept, ids = k, candidate
        if kept >= min(2, len(paragraphs)):
            out.append(ids)
    return out


class InstructionTask:
    """Chapter 7's data made ready to train on: the book's 85/10/5 split, prompt format and
    collate, next-token loss (padding and optionally the prompt ignored), and the evaluation
    (loss on both splits and a few held-out answers); held-out examples scored before and after."""

    def __init__(self, data: InstructionData, tokenizer, s: FinetuneSettings, max_len: int, device=None):
        self.tokenizer, self.s, self.max_len = tokenizer, s, max_len
        self.num_classes = None
        pad_id = pad_id_of(tokenizer)
        train_e, test_e, val_e = split_instructions(data.entries)
        if len(data) < MIN_INSTRUCTIONS or not val_e:
            raise FinetuneError(f"the data set has {len(data)} entries: too few to split 85/10/5 "
                                f"(use at least {MIN_INSTRUCTIONS})")
        train_ds = InstructionDataset(train_e, tokenizer)
        if s.mask_instruction:  # a prompt that fills the window leaves no response to learn
            keep = [i for i, n in enumerate(train_ds.prompt_lengths) if n < max_len - 1]
            if not keep:
                raise FinetuneError(f"every prompt is longer than {max_len} tokens: raise max length "
                                    "or turn off instruction masking")
            train_ds.encoded = [train_ds.encoded[i] for i in keep]
            train_ds.prompt_lengths = [train_ds.prompt_lengths[i] for i in keep]
        self.n_instructions = len(train_ds)
        self.n_rehearsal = 0
        if s.rehearsal > 0 and data.rehearsal:
            pieces = rehearsal_pieces(data.rehearsal, tokenizer, max_len - 1)
            random.Random(int(s.seed)).shuffle(pieces)
            pieces = pieces[: round(s.rehearsal * len(train_ds))]
            train_ds.encoded += pieces  # prompt length 0: the loss is on every token, as in pre-training
            train_ds.prompt_lengths += [0] * len(pieces)
            self.n_rehearsal = len(pieces)
        collate = instruction_collate(pad_id, max_len, s.mask_instruction, ignore_index=IGNORE_INDEX)
        pin = pin_host_memory(device)  # batches bound for a GPU: page-locked, copied asynchronously
        self.batches = DataLoader(train_ds, batch_size=s.batch_size, shuffle=True, collate_fn=collate,
                                  generator=torch.Generator().manual_seed(int(s.seed)), drop_last=False,
                                  pin_memory=pin)
        self.train_eval_loader = DataLoader(train_ds, batch_size=s.batch_size, shuffle=False, collate_fn=collate,
                                            pin_memory=pin)
        self.val_loader = DataLoader(InstructionDataset(val_e, tokenizer), batch_size=s.batch_size, shuffle=False,
                                     collate_fn=collate, pin_memory=pin)
        self.sample_entries = val_e[: s.n_samples]
        self.score_entries = (test_e or val_e)[: s.n_score]
        self.base_scores, self.base_answers = None, []

    @staticmethod
    def loss_terms(batch) -> int:
        """How many terms a batch's mean loss averages: its target tokens that are not ignored."""
        return int((batch[1] != IGNORE_INDEX).sum())

    @staticmethod
    def batch_loss(model, batch, device) -> torch.Tensor:
        return calc_loss_batch(batch[0], batch[1], model, device)

    def evaluate(self, model, device) -> dict:
        s = self.s
        samples = [dict(instruction=e["instruction"], input=e.get("input", ""), expected=e["output"],
                        response=respond(model, self.tokenizer, e, s.sample_tokens)) for e in self.sample_entries]
        return dict(train_loss=calc_loss_loader(self.train_eval_loader, model, device, s.eval_batches),
                    val_loss=calc_loss_loader(self.val_loader, model, device, s.eval_batches), samples=samples)

    def before_training(self, model, stop: StopCheck) -> None:
        """Score the held-out examples on the model before training (LoRA's B = 0: the base's answers)."""
        model.eval()
        self.base_scores, self.base_answers = score_responses(model, self.tokenizer, self.score_entries,
                                                              self.s.sample_tokens, stop)

    def fill_result(self, result: "FinetuneResult", model, device) -> dict:
        """The same held-out examples scored after training, beside the answers before."""
        after_scores, after_answers = score_responses(model, self.tokenizer, self.score_entries, self.s.sample_tokens)
        result.scores = {"before": self.base_scores, "after": after_scores}
        result.comparisons = [dict(instruction=e["instruction"], input=e.get("input", ""), expected=e["output"],
                                   before=b, after=a)
                              for e, b, a in zip(self.score_entries, self.base_answers, after_answers)]
        return {"scores": result.scores}


def prepare_task(data: ClassificationData | InstructionData, tokenizer, s: FinetuneSettings,
                 max_len: int, device=None) -> ClassificationTask | InstructionTask:
    """The run's data made ready for its task (a FinetuneError says what to change when it cannot be);
    its batches pinned in host memory when ``device`` is a CUDA GPU."""
    classify = s.task == "classification"
    if classify != isinstance(data, ClassificationData):
        raise FinetuneError(f"the {s.task} task needs a {'labelled' if classify else 'instruction'} data set")
    return (ClassificationTask if classify else InstructionTask)(data, tokenizer, s, max_len, device)


# ---------------------------------------------------------------- the run

def finetune(base_model: nn.Module, tokenizer, data: ClassificationData | InstructionData,
             settings: FinetuneSettings | None = None, *, base_name: str = "", stop: StopCheck = None,
             device=None, dist=None) -> Iterator[TrainEvent]:
    """Train a copy of ``base_model`` with ``training.run_training``; yield a TrainEvent per step;
    the last has ``done=True`` and a ``result`` (none when training diverged before any evaluation
    with finite losses). The base model is never modified.

    ``dist`` (a ``distributed.DistContext``, under ``torchrun``) trains on several processes:
    every rank reads the same global batches and trains on its share of the rows, gradients are
    averaged by DDP, and rank 0 alone evaluates and gets the result."""
    s = settings or FinetuneSettings()
    problems = s.problems()
    if problems:
        raise FinetuneError("; ".join(problems))
    device = pick_device(device)
    ctx = base_model.cfg.context_length
    task = prepare_task(data, tokenizer, s, min(int(s.max_length or ctx), ctx), device)
    model = prepare_model(base_model, s, task.num_classes, device)
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], lr=s.lr,
                               weight_decay=s.weight_decay)
    is_main = dist is None or dist.is_main
    step_model = model
    if dist is not None and dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        step_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def batch_loss(m, batch):
        if dist is None or not dist.enabled:
            return task.batch_loss(m, batch, device)
        rows, factor = dist.share(batch, task.loss_terms)
        return task.batch_loss(m, rows, device) * factor

    if is_main:
        task.before_training(model, stop)
    history: list[dict] = []
    total_steps = min(int(s.max_steps), int(s.epochs) * len(task.batches))
    for ev in run_training(model, optimizer, task.batches,
                           TrainingTask(batch_loss=batch_loss, evaluate=lambda: task.evaluate(model, device)),
                           total_steps=total_steps, eval_interval=s.eval_interval,
                           lr_schedule=lambda step, seconds: finetune_lr(s, step, seconds, total_steps),
                           grad_clip=s.grad_clip, max_seconds=s.max_seconds, stop=stop, device=device,
                           dist=dist, step_model=step_model):
        if ev.is_eval:
            history.append(ev.to_dict())
        if ev.done and ev.status == "diverged" and ev.rolled_back_to is None:
            ev.reason += " Nothing was saved: an earlier result and adapter stay as they were."
        elif ev.done and is_main:  # finished, stopped, or rolled back to its last good evaluation
            ev.result = finetune_result(task, model, base_model, s, data, base_name, history, ev, device)
        yield ev


def finetune_lr(s: FinetuneSettings, step: int, seconds: float, total_steps: int) -> float:
    """Constant, or (``s.cosine``) a cosine to lr/10 that ends with the steps or the time limit."""
    if not s.cosine:
        return s.lr
    by_time = seconds / s.max_seconds if s.max_seconds else 0.0
    return cosine_lr(s.lr, s.lr / 10, max(step / max(total_steps, 1), by_time))


def finetune_result(task: ClassificationTask | InstructionTask, model, base_model, s: FinetuneSettings, data,
                    base_name: str, history: list[dict], final: TrainEvent, device) -> "FinetuneResult":
    """What a run leaves: the tuned model, its scores, update norms and adapter info. A diverged run
    leaves the model of the evaluation it was rolled back to, with that evaluation's numbers."""
    steps, val_loss = final.step, final.val_loss
    if final.rolled_back_to is not None:
        steps = final.rolled_back_to
        val_loss = next(h["val_loss"] for h in reversed(history) if h["step"] == steps)
    result = FinetuneResult(task=s.task, method=s.method, model=model, tokenizer=task.tokenizer, info=None,
                            counts=count_parameters(model), history=history, status=final.status,
                            reason=final.reason, max_length=task.max_len, val_loss=val_loss)
    extra = {"task": s.task, "dataset": data.name, "steps": steps, "settings": _settings_dict(s)}
    extra.update(task.fill_result(result, model, device))
    result.norms = update_norms(model, None if s.method == "lora" else base_model)
    fingerprint = model_fingerprint(base_model, skip=("out_head",) if task.num_classes is not None else ())
    result.info = adapter_info(base_name, fingerprint, s, task.num_classes, extra)
    return result


def _settings_dict(s: FinetuneSettings) -> dict:
    d = asdict(s)
    d["targets"] = list(s.targets)
    return d


# ---------------------------------------------------------------- command line

def _cli_data(task: str, source: str):
    from . import instruct_data as idata

    if source == "builtin":
        return idata.builtin_classification() if task == "classification" else idata.builtin_instructions()
    if source == "book":
        got = idata.sms_spam() if task == "classification" else idata.book_instruction_data()
        if isinstance(got, idata.Unavailable):
            raise SystemExit(got.reason)
        return got
    if task == "classification":
        return idata.parse_classification_csv(source, name=Path(source).name)
    return idata.load_instruction_upload(source, name=Path(source).name)


def main(argv=None) -> int:
    """Fine-tune from the command line (the loop the Fine-tune tab runs) and save the adapter.

        python -m llm_core.finetune --model pydoc-gpt --task instruction --data builtin \\
            --method lora --rank 16 --alpha 32 --steps 1000 --out runs/pydoc-instruct

    ``--out DIR`` writes peft's adapter format (adapter_config.json + adapter_model.safetensors) for
    LoRA, or the whole tuned model in Hugging Face's GPT-2 layout for last-block/full; a path ending
    in ``.safetensors`` writes the single-file adapter of earlier versions.

    Several processes (DDP; gloo on CPUs, NCCL on GPUs), each training on its share of every global
    batch (``--batch-size`` is the global batch), rank 0 logging, evaluating and saving:

        torchrun --nproc_per_node 2 -m llm_core.finetune --batch-size 16 ... --out runs/tuned
    """
    import argparse

    from .distributed import DistContext

    p = argparse.ArgumentParser(prog="python -m llm_core.finetune", description=main.__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="base model name (default: the app's default model)")
    p.add_argument("--task", choices=TASKS, default="instruction")
    p.add_argument("--data", default="builtin", help="builtin, book, or a CSV (classification) / JSON (instruction) file")
    p.add_argument("--method", choices=METHODS, default="lora")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--alpha", type=float, default=32.0)
    p.add_argument("--lora-scaling", choices=LORA_SCALINGS, default="alpha/rank",
                   help="scale the LoRA update by alpha/rank (peft's) or by alpha (the book's LoRALayer)")
    p.add_argument("--targets", nargs="+", default=["attention", "feed-forward"])
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--cosine", action="store_true", help="decay the lr to lr/10 by the end of the run")
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--eval-interval", type=int, default=50)
    p.add_argument("--eval-batches", type=int, default=10)
    p.add_argument("--max-length", type=int, default=None)
    p.add_argument("--mask-instruction", action="store_true", help="loss on the response only")
    p.add_argument("--n-score", type=int, default=100, help="held-out examples scored before vs after")
    p.add_argument("--seed", type=int, default=123)
    p.add_argument("--max-minutes", type=float, default=60.0)
    p.add_argument("--threads", type=int)
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--log-json", help="also append every step's event as a JSON line to this file")
    p.add_argument("--out", help="write the result here: a folder (peft adapter / Hugging Face model) "
                                 "or a .safetensors file (the older single-file adapter)")
    p.add_argument("--push-to-hub", metavar="REPO", help="also upload the --out folder to this Hub repo")
    args = p.parse_args(argv)
    if args.push_to_hub and (not args.out or args.out.endswith(".safetensors")):
        raise SystemExit("--push-to-hub needs --out DIR (a folder in Hugging Face's formats)")
    if args.threads:
        torch.set_num_threads(args.threads)
    dist = DistContext.from_env(pick_device(args.device))
    try:
        return _run_cli(args, argv, dist)
    finally:
        dist.close()


def _run_cli(args, argv, dist) -> int:
    import json
    import sys

    from .registry import load_model

    device = dist.device(pick_device(args.device))
    bundle = load_model(args.model)
    data = _cli_data(args.task, args.data)
    settings = FinetuneSettings(task=args.task, method=args.method, rank=args.rank, alpha=args.alpha,
                                lora_scaling=args.lora_scaling, targets=tuple(args.targets), epochs=args.epochs,
                                max_steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                                cosine=args.cosine, weight_decay=args.weight_decay, eval_interval=args.eval_interval,
                                eval_batches=args.eval_batches, seed=args.seed,
                                max_seconds=min(args.max_minutes * 60, MAX_SECONDS), max_length=args.max_length,
                                mask_instruction=args.mask_instruction, n_score=args.n_score)
    main_rank = dist.is_main
    procs = f" × {dist.world_size} processes ({dist.backend})" if dist.enabled else ""
    if main_rank:
        print(f"{bundle.summary()}\n{data.name}: {len(data):,} examples; on {device}{procs}", flush=True)
    log_file = open(args.log_json, "a") if args.log_json and main_rank else None
    last = None
    try:
        for ev in finetune(bundle.model, bundle.tokenizer, data, settings, base_name=bundle.name, device=device,
                           dist=dist):
            last = ev
            if not main_rank:
                continue
            if log_file:
                log_file.write(json.dumps(ev.to_dict()) + "\n")
                log_file.flush()
            if ev.is_eval:
                acc = f" acc {ev.train_acc:.3f}/{ev.val_acc:.3f}" if ev.val_acc is not None else ""
                print(f"step {ev.step:5d} train {ev.train_loss:.4f} val {ev.val_loss:.4f}{acc} "
                      f"{ev.tokens_per_s:,.0f} tok/s {ev.elapsed_s:,.0f} s", flush=True)
                for sample in ev.samples or []:
                    print(f"    {sample['instruction']!r} {sample['input']!r} -> {sample['response']!r} "
                          f"(expected {sample['expected']!r})", flush=True)
    finally:
        if log_file:
            log_file.close()
    if not main_rank:
        dist.barrier()  # wait for rank 0's saving: a rank that leaves early can abort the group's teardown
        return 0 if last is not None and last.status != "diverged" else 1
    try:
        if last is None or last.result is None:
            raise SystemExit(f"no result: {last.reason if last else 'no events'}")
        res = last.result
        print(f"{last.status}: {last.reason}. {res.counts.summary()}")
        print(json.dumps({"accuracy": res.accuracy, "val_loss": res.val_loss, "scores": res.scores}, indent=2))
        if args.out:
            res.info.extra["command"] = "python -m llm_core.finetune " + " ".join(sys.argv[1:] if argv is None else argv)
            if args.out.endswith(".safetensors"):
                print(f"adapter written to {res.save_adapter(args.out)}")
            else:
                out = res.save_hf(args.out)
                print(f"written to {out} (" + ", ".join(sorted(f.name for f in out.iterdir())) + ")")
                if args.push_to_hub:
                    from .export import push_from_cli

                    if not push_from_cli(out, args.push_to_hub):
                        return 1
    finally:
        dist.barrier()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
