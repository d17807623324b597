"""The book's pre-training loop, and the one step loop that pre-training and fine-tuning share.

``run_training`` is the loop: AdamW steps over batches, a ``TrainEvent`` after every step (and
an evaluation before the first one), so a UI can stream it, a CLI can print it, and either can
stop it between steps; stop requests, step and time caps, gradient clipping, the non-finite
guard with its roll-back, and several processes (DDP) are handled there once. A kind of
training supplies a ``TrainingTask``: its batch loss and its evaluation.

``train_model`` is pre-training with it: next-token cross-entropy over sliding windows; every
``eval_interval`` steps the event carries the book's evaluation: mean loss over
``eval_batches`` train and validation batches (``calc_loss_loader``), the validation
perplexity and a sample. Fine-tuning (``finetune.finetune``) brings its own loss and evaluation.
The book's own loop, ``train_model_simple``, is kept as the book wrote it.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, fields
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F

from .device import autocast_for, pick_device, to_device  # noqa: F401  (pick_device: used by the CLIs and tabs)
from .model import GPTModel

StopCheck = Callable[[], bool] | threading.Event | None




# ---------------------------------------------------------------- the book's loss helpers

def calc_loss_batch(input_batch: torch.Tensor, target_batch: torch.Tensor, model: GPTModel, device) -> torch.Tensor:
    """Mean cross-entropy of one batch: logits [B, T, V] against targets [B, T]."""
    input_batch, target_batch = to_device(input_batch, device), to_device(target_batch, device)
    logits = model(input_batch)
    return F.cross_entropy(logits.flatten(0, 1), target_batch.flatten())


def calc_loss_loader(data_loader, model: GPTModel, device, num_batches: int | None = None) -> float:
    """Mean batch loss over the first ``num_batches`` batches (all when None); NaN if empty."""
    if len(data_loader) == 0:
        return float("nan")
    n = len(data_loader) if num_batches is None else min(num_batches, len(data_loader))
    total = 0.0
    for i, (inputs, targets) in enumerate(data_loader):
        if i >= n:
            break
        total += calc_loss_batch(inputs, targets, model, device).item()
    return total / n


def perplexity(loss: float) -> float:
    """exp(loss), the effective number of equally likely next tokens (inf when it overflows)."""
    try:
        return math.exp(loss)
    except OverflowError:
        return float("inf")


# ---------------------------------------------------------------- settings and events

@dataclass
class TrainConfig:
    max_steps: int = 1000             # server-side cap on optimizer steps
    num_epochs: int | None = None     # None: run until max_steps
    lr: float = 4e-4
    weight_decay: float = 0.1
    warmup_steps: int = 0             # linear warmup from lr/warmup to lr
    cosine_decay: bool = False        # after warmup, cosine from lr down to min_lr at the last step
    min_lr: float = 0.0
    decay_by_time: bool = False       # with max_seconds: cosine follows elapsed time when that is further along
    grad_clip: float | None = 1.0     # max global gradient norm (None: no clipping)
    eval_interval: int = 5            # evaluate every N steps (and at the start and end)
    eval_batches: int = 5             # ... on this many train and validation batches
    max_seconds: float | None = None  # server-side cap on wall time
    sample_prompt: str = "Every effort moves you"
    sample_tokens: int = 24
    sample_temperature: float = 0.0   # 0: greedy, as the book's training printout
    seed: int = 123                   # for sampling at temperature > 0
    restore_on_divergence: bool = True  # keep a copy at each eval to roll back to on NaN/inf

    def problems(self) -> list[str]:
        out = []
        if self.max_steps < 1:
            out.append(f"max_steps must be at least 1 (got {self.max_steps})")
        if not (math.isfinite(self.lr) and self.lr > 0):
            out.append(f"learning rate must be a positive number (got {self.lr})")
        if self.weight_decay < 0:
            out.append(f"weight decay must be ≥ 0 (got {self.weight_decay})")
        if self.warmup_steps < 0:
            out.append(f"warmup steps must be ≥ 0 (got {self.warmup_steps})")
        if self.eval_interval < 1 or self.eval_batches < 1:
            out.append("eval interval and eval batches must be at least 1")
        if self.grad_clip is not None and not self.grad_clip > 0:
            out.append(f"gradient clipping must be > 0 or off (got {self.grad_clip})")
        if self.num_epochs is not None and self.num_epochs < 1:
            out.append(f"epochs must be at least 1 (got {self.num_epochs})")
        return out


@dataclass
class TrainEvent:
    """One step of a run (pre-training or fine-tuning); evaluation events carry the metrics."""
    step: int                       # optimizer steps done
    epoch: int                      # 1-based epoch the last step belonged to (0 before training)
    tokens_seen: int
    lr: float
    batch_loss: float | None        # loss of the last step's batch
    elapsed_s: float
    tokens_per_s: float             # over training time (evaluations excluded)
    eta_s: float | None             # at the training pace so far, never past the time cap
    total_steps: int
    is_eval: bool = False
    train_loss: float | None = None  # evaluation events only
    val_loss: float | None = None
    perplexity: float | None = None  # pre-training: exp(val_loss), or exp(train_loss) without validation data
    sample: str | None = None        # pre-training: a continuation of the sample prompt
    train_acc: float | None = None   # classification fine-tuning
    val_acc: float | None = None
    samples: list[dict] | None = None  # instruction fine-tuning: held-out answers at this evaluation
    done: bool = False
    stopped: bool = False           # ended before total_steps (user, time cap or divergence)
    status: str = "running"         # running | finished | stopped | time_limit | diverged
    reason: str = ""
    rolled_back_to: int | None = None  # diverged: the step whose weights the model went back to
    result: Any = None              # fine-tuning: the FinetuneResult, on the last event

    def to_dict(self) -> dict:
        """The event's numbers and texts (without ``result``), JSON-ready."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "result"}


# ---------------------------------------------------------------- schedule, init, sampling

def lr_at(step: int, cfg: TrainConfig, total_steps: int, time_fraction: float = 0.0) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warmup, then constant or cosine.

    ``time_fraction`` (elapsed / max_seconds) lets a time-capped run finish its decay on time."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if not cfg.cosine_decay:
        return cfg.lr
    span = max(total_steps - cfg.warmup_steps, 1)
    return cosine_lr(cfg.lr, cfg.min_lr, max(max(step - cfg.warmup_steps, 0) / span, time_fraction))


def cosine_lr(lr: float, min_lr: float, progress: float) -> float:
    """Half a cosine from ``lr`` (progress 0) down to ``min_lr`` (progress 1 and after)."""
    progress = min(max(progress, 0.0), 1.0)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * progress))


def gpt2_init_(model: GPTModel, seed: int = 123) -> GPTModel:
    """GPT-2's initialisation (normal, std 0.02; residual projections scaled by 1/sqrt(2·layers)).

    PyTorch's defaults (the book's) give N(0, 1) embeddings, which train slower from scratch."""
    gen = torch.Generator().manual_seed(seed)
    resid_std = 0.02 / math.sqrt(2 * model.cfg.n_layers)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("norm1.scale", "norm2.scale", "final_norm.scale")):
                p.fill_(1.0)
            elif p.dim() == 1:
                p.zero_()
            else:
                std = resid_std if name.endswith(("out_proj.weight", "ff.layers.2.weight")) else 0.02
                p.copy_(torch.randn(p.shape, generator=gen) * std)
    return model


def sample_text(model: GPTModel, tokenizer, prompt: str, max_new_tokens: int, temperature: float = 0.0,
                generator: torch.Generator | None = None, top_k: int | None = None) -> str:
    """A short continuation to watch learning (greedy at temperature 0, as the book's printout)."""
    from .generation import generate

    ids = tokenizer.encode(prompt) or [tokenizer.eot_id or 0]
    idx = torch.tensor([ids], dtype=torch.long, device=model.device)
    out = generate(model, idx, max_new_tokens, temperature=temperature, top_k=top_k, generator=generator)
    return tokenizer.decode(out[0].tolist())


def should_stop(stop: StopCheck) -> bool:
    if stop is None:
        return False
    if isinstance(stop, threading.Event):
        return stop.is_set()
    return bool(stop())


def run_interruption(stop: StopCheck, started: float, max_seconds: float | None,
                     step: int) -> tuple[str, str] | None:
    """(status, reason) when a run must end before its next step (a stop request or the time
    cap), else None: checked by ``run_training`` between steps."""
    if should_stop(stop):
        return "stopped", f"stopped by request after {step} steps"
    if max_seconds is not None and time.perf_counter() - started >= max_seconds:
        return "time_limit", f"reached the time limit of {max_seconds:.0f} s after {step} steps"
    return None


def eta_seconds(step: int, total_steps: int, seconds_so_far: float, elapsed: float,
                max_seconds: float | None) -> float | None:
    """Time left at the pace of the steps so far (``seconds_so_far``: training time, evaluations
    excluded), never past the time cap (``elapsed``: wall time); None before the first step."""
    if step <= 0:
        return None
    eta = (total_steps - step) * seconds_so_far / step
    return eta if max_seconds is None else min(eta, max(max_seconds - elapsed, 0.0))


def make_optimizer(params, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with PyTorch's fused kernel where the device has one (CPU and CUDA do): one pass
    over all parameters instead of a loop of small ops. On GPT-2 small on 2 CPU cores an
    optimizer step took ~2 s fused vs ~7.6 s ``foreach`` (benchmarks/bench_train.py measures
    whole steps). Same update rule; results differ only by float rounding."""
    params = list(params)
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, ValueError, TypeError):  # a device or dtype without the fused kernel
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def optimizer_step(model, optimizer: torch.optim.Optimizer, compute_loss: Callable[[], torch.Tensor], device,
                   grad_clip: float | None, reduce: Callable[[float], float] | None = None) -> tuple[float, float]:
    """One optimizer step on the loss ``compute_loss()`` returns: (loss, gradient norm before
    clipping). The loss and norm are checked by the caller; a non-finite value means the update
    must not be trusted, so with a non-finite loss no backward pass and no update is done, and
    with a non-finite gradient no update. ``reduce`` averages the loss over processes before
    that check, so every rank takes the same decision."""
    optimizer.zero_grad(set_to_none=True)
    with autocast_for(device):
        loss = compute_loss()
    loss_value = loss.item() if reduce is None else reduce(loss.item())
    if not math.isfinite(loss_value):
        return loss_value, float("nan")
    loss.backward()
    grad_norm = _finite_grad_norm(model, grad_clip)
    if math.isfinite(grad_norm):
        optimizer.step()
    return loss_value, grad_norm


def train_step(model, optimizer: torch.optim.Optimizer, inputs: torch.Tensor, targets: torch.Tensor,
               device, grad_clip: float | None, reduce: Callable[[float], float] | None = None
               ) -> tuple[float, float]:
    """One pre-training step (next-token cross-entropy on one batch): (loss, gradient norm)."""
    return optimizer_step(model, optimizer, lambda: calc_loss_batch(inputs, targets, model, device), device,
                          grad_clip, reduce)


def _finite_grad_norm(model: GPTModel, clip: float | None) -> float:
    """The global gradient norm, the gradients clipped to ``clip`` first when it is set: what
    ``clip_grad_norm_`` does, without its multiply-by-1.0 pass over every gradient when the norm
    is already under the limit (the coefficient is computed as it computes it, so the result is
    the same bit for bit)."""
    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    if clip is not None and torch.clamp(clip / (norm + 1e-6), max=1.0).item() < 1.0:
        torch.nn.utils.clip_grads_with_norm_(params, clip, norm)
    return float(norm)


# ---------------------------------------------------------------- the one step loop

@dataclass
class TrainingTask:
    """What a kind of training gives the one loop (``run_training``): its loss and its evaluation.

    ``batch_loss(model, batch)`` is the mean loss of one batch through ``model`` (the model being
    stepped: maybe its DDP or compiled wrapper); ``evaluate()`` the metrics of the model now, as
    ``TrainEvent`` fields (``train_loss``, ``val_loss``, and any of the optional ones), called in
    eval mode without gradients; ``batch_tokens(batch)`` the tokens a step reads on every process."""
    batch_loss: Callable[[torch.nn.Module, Any], torch.Tensor]
    evaluate: Callable[[], dict]
    batch_tokens: Callable[[Any], int] = lambda batch: batch[0].numel()


def run_training(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batches, task: TrainingTask, *,
                 total_steps: int, eval_interval: int, lr_schedule: Callable[[int, float], float],
                 grad_clip: float | None, max_seconds: float | None = None, stop: StopCheck = None,
                 device=None, dist=None, step_model=None, resume: dict | None = None,
                 keep_good_state: bool = True) -> Iterator[TrainEvent]:
    """The step loop pre-training and fine-tuning share: train ``model`` in place on ``batches``
    (each ``for batch in batches`` is one epoch) and yield a ``TrainEvent`` before the first step
    (an evaluation) and after every step; every ``eval_interval`` steps and at the end the event
    carries ``task.evaluate()``; the last one has ``done=True``.

    - Stopping (``stop`` set or returning True, ``total_steps``, ``max_seconds`` of wall time)
      happens between steps and leaves the partly trained model in place.
    - Every step checks that the loss and the gradient norm are finite (and clips the norm to
      ``grad_clip`` when it is set). A non-finite one stops the run with ``status="diverged"``;
      the model is rolled back to its last evaluation whose losses were finite.
    - ``lr_schedule(step, seconds)`` gives the learning rate of 0-based step ``step`` when
      ``seconds`` of the run have passed. Tokens/s and the ETA count training time only.
    - ``dist`` (a ``distributed.DistContext``) and ``step_model`` (the DDP wrapper of ``model``)
      train on several processes: the loss is averaged over ranks, stops are agreed by all, and
      rank 0 alone evaluates (its events carry the evaluations). ``resume`` (``step``,
      ``tokens_seen``, ``epoch``, ``train_seconds``) continues a run without the opening evaluation.
    """
    step_model = model if step_model is None else step_model
    is_main = dist is None or dist.is_main
    start = time.perf_counter()
    train_time = 0.0  # seconds spent in optimizer steps
    step, epoch, tokens_seen = 0, 0, 0
    if resume:
        step, epoch, tokens_seen = int(resume["step"]), int(resume["epoch"]), int(resume["tokens_seen"])
        train_time = float(resume.get("train_seconds", 0.0))
    last_loss: float | None = None
    good_state: dict | None = None
    good_step = 0
    current_lr = lr_schedule(step, 0.0)

    def event(**kw) -> TrainEvent:
        elapsed = time.perf_counter() - start
        eta = None if kw.get("done") else eta_seconds(step, total_steps, train_time, elapsed, max_seconds)
        return TrainEvent(step=step, epoch=epoch, tokens_seen=tokens_seen, lr=current_lr, batch_loss=last_loss,
                          elapsed_s=elapsed, tokens_per_s=tokens_seen / train_time if train_time > 0 else 0.0,
                          eta_s=eta, total_steps=total_steps, **kw)

    def evaluate(**kw) -> TrainEvent:
        nonlocal good_state, good_step
        if not is_main:  # other ranks skip evaluations (no collectives happen in them)
            return event(**kw)
        was_training = model.training
        model.eval()
        with torch.no_grad():
            metrics = task.evaluate()
        model.train(was_training)
        losses = [metrics.get(k) for k in ("train_loss", "val_loss") if metrics.get(k) is not None]
        if keep_good_state and all(math.isfinite(v) for v in losses):
            good_state = {k: p.detach().to("cpu", copy=True) for k, p in model.named_parameters() if p.requires_grad}
            good_step = step
        return event(is_eval=True, **metrics, **kw)

    def diverged(what: str) -> TrainEvent:
        optimizer.zero_grad(set_to_none=True)
        if good_state is not None:
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if name in good_state:
                        p.copy_(good_state[name])
            note = f" The model was rolled back to step {good_step}, its last evaluation."
        else:
            note = " No evaluation had finite losses, so there was nothing to roll back to."
        model.eval()
        return event(done=True, stopped=True, status="diverged",
                     rolled_back_to=good_step if good_state is not None else None,
                     reason=f"{what} at step {step + 1}: training diverged (try a lower learning rate "
                            f"or gradient clipping).{note}")

    if not resume:
        yield evaluate()  # the untrained model: loss ≈ ln(vocab)
    model.train()
    status, reason = "running", ""
    reduce = None if dist is None else dist.mean
    while status == "running" and step < total_steps:
        epoch += 1
        for batch in batches:
            interrupted = run_interruption(stop, start, max_seconds, step)
            if dist is not None and dist.any(interrupted is not None) and interrupted is None:
                interrupted = ("stopped", f"another process stopped after {step} steps")
            if interrupted:
                status, reason = interrupted
                break
            t0 = time.perf_counter()
            current_lr = lr_schedule(step, t0 - start)
            for group in optimizer.param_groups:
                group["lr"] = current_lr
            loss_value, grad_norm = optimizer_step(step_model, optimizer, lambda: task.batch_loss(step_model, batch),
                                                   device, grad_clip, reduce)
            if not math.isfinite(loss_value):
                yield diverged(f"the loss became {loss_value}")
                return
            if not math.isfinite(grad_norm):
                yield diverged(f"the gradient became {grad_norm}")
                return
            train_time += time.perf_counter() - t0
            step += 1
            tokens_seen += task.batch_tokens(batch)
            last_loss = loss_value
            if step >= total_steps:
                break
            yield evaluate() if step % eval_interval == 0 else event()
    model.eval()
    if status == "running":
        status, reason = "finished", f"finished {step} steps"
    yield evaluate(done=True, stopped=status != "finished", status=status, reason=reason)


def train_model(model: GPTModel, train_loader, val_loader=None, cfg: TrainConfig | None = None, *,
                tokenizer=None, stop: StopCheck = None, device=None,
                optimizer: torch.optim.Optimizer | None = None, train_eval_loader=None,
                dist=None, step_model=None, resume: dict | None = None) -> Iterator[TrainEvent]:
    """Pre-train ``model`` in place with ``run_training``, yielding a TrainEvent per step; the
    last one has ``done=True``. A NaN/inf loss or gradient stops the run with
    ``status="diverged"`` and the model rolled back to the last evaluation (unless
    ``cfg.restore_on_divergence`` is off).

    For the CLI: ``train_eval_loader`` gives the training batches evaluations read (default
    ``train_loader``); ``dist``, ``step_model`` and ``resume`` as ``run_training`` has them.
    """
    cfg = cfg or TrainConfig()
    problems = cfg.problems()
    if problems:
        raise ValueError("; ".join(problems))
    if len(train_loader) == 0:
        raise ValueError("the training text is too short for even one batch: use more text, "
                         "a shorter context or a smaller batch")
    device = pick_device(device)
    model.to(device)
    train_eval_loader = train_loader if train_eval_loader is None else train_eval_loader
    world = 1 if dist is None else dist.world_size
    if optimizer is None:
        optimizer = make_optimizer(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    per_epoch = len(train_loader)
    total_steps = cfg.max_steps if cfg.num_epochs is None else min(cfg.max_steps, cfg.num_epochs * per_epoch)
    from .generation import make_generator
    sample_gen = make_generator(cfg.seed, device)

    def lr_schedule(step: int, seconds: float) -> float:
        by_time = seconds / cfg.max_seconds if cfg.decay_by_time and cfg.max_seconds else 0.0
        return lr_at(step, cfg, total_steps, by_time)

    def evaluate() -> dict:
        train_loss = calc_loss_loader(train_eval_loader, model, device, cfg.eval_batches)
        val_loss = (calc_loss_loader(val_loader, model, device, cfg.eval_batches)
                    if val_loader is not None and len(val_loader) else None)
        sample = (sample_text(model, tokenizer, cfg.sample_prompt, cfg.sample_tokens,
                              cfg.sample_temperature, sample_gen) if tokenizer is not None else None)
        return dict(train_loss=train_loss, val_loss=val_loss, sample=sample,
                    perplexity=perplexity(val_loss if val_loss is not None else train_loss))

    task = TrainingTask(batch_loss=lambda m, batch: calc_loss_batch(batch[0], batch[1], m, device),
                        evaluate=evaluate,
                        batch_tokens=lambda batch: batch[0].numel() * world)  # every rank's share of the batch
    yield from run_training(model, optimizer, train_loader, task, total_steps=total_steps,
                            eval_interval=cfg.eval_interval, lr_schedule=lr_schedule, grad_clip=cfg.grad_clip,
                            max_seconds=cfg.max_seconds, stop=stop, device=device, dist=dist,
                            step_model=step_model, resume=resume, keep_good_state=cfg.restore_on_divergence)


def evaluate_model(model, train_loader, val_loader, device, eval_iter) -> tuple[float, float]:
    """The book's evaluation: mean loss over ``eval_iter`` train and validation batches, in eval mode."""
    model.eval()
    with torch.no_grad():
        train_loss = calc_loss_loader(train_loader, model, device, num_batches=eval_iter)
        val_loss = calc_loss_loader(val_loader, model, device, num_batches=eval_iter)
    model.train()
    return train_loss, val_loss


def generate_and_print_sample(model, tokenizer, device, start_context, max_new_tokens: int = 50) -> str:
    """The book's per-epoch printout: a greedy continuation of ``start_context`` on one line."""
    model.eval()
    with torch.no_grad():
        text = sample_text(model, tokenizer, start_context, max_new_tokens)
    print(text.replace("\n", " "))
    model.train()
    return text


def train_model_simple(model, train_loader, val_loader, optimizer, device, num_epochs, eval_freq, eval_iter,
                       start_context, tokenizer) -> tuple[list[float], list[float], list[int]]:
    """The book's loop with the book's schedule: returns (train_losses, val_losses, tokens_seen).

    Evaluates after optimizer steps 1, 1 + eval_freq, 1 + 2·eval_freq, … (``global_step`` starts at
    -1 and ``global_step % eval_freq == 0`` after each step) and prints a sample after each epoch.
    Every evaluation starts new loader iterators, which draw from the global random generator, so
    the schedule fixes the dropout and shuffle streams too: with ``torch.manual_seed(123)`` this
    gives the book's numbers. The app's own runs use ``train_model`` (streaming, stop, caps)."""
    train_losses, val_losses, track_tokens_seen = [], [], []
    tokens_seen, global_step = 0, -1
    for epoch in range(num_epochs):
        model.train()
        for input_batch, target_batch in train_loader:
            optimizer.zero_grad()
            loss = calc_loss_batch(input_batch, target_batch, model, device)
            loss.backward()
            optimizer.step()
            tokens_seen += input_batch.numel()
            global_step += 1
            if global_step % eval_freq == 0:
                train_loss, val_loss = evaluate_model(model, train_loader, val_loader, device, eval_iter)
                train_losses.append(train_loss)
                val_losses.append(val_loss)
                track_tokens_seen.append(tokens_seen)
                print(f"Ep {epoch + 1} (Step {global_step:06d}): "
                      f"Train loss {train_loss:.3f}, Val loss {val_loss:.3f}")
        generate_and_print_sample(model, tokenizer, device, start_context)
    return train_losses, val_losses, track_tokens_seen
