"""Decoding: turning next-token logits into text (book chapter 5.3), one API for every tab.

The pieces, from small to large:

- logits steps, each a small callable ``logits -> logits`` that only masks or rescales:
  ``TopK(k)``, ``Temperature(t)``, ``TopP(p)``; ``logits_pipeline(settings)`` lists them in
  the order they run (top-k, then temperature, then top-p: the book's top-k-then-temperature,
  and top-p measured on the tempered distribution, as Hugging Face does);
- ``next_token_probs`` / ``sample_next_token``: the distribution actually sampled from and
  one draw from it (argmax when the temperature is 0);
- ``generate(model, idx, max_new_tokens, context_size, temperature=0.0, top_k=None,
  eos_id=None)``: the book's function (plus ``top_p``, ``use_cache``, ``generator``);
- ``stream_generate(model, ids, settings, generator)``: yields one ``Step`` per new token with
  the top candidates before/after filtering, the pick's probability and the entropy.

Generation uses the model's KV cache unless told not to. Positions are absolute, so once
the sequence fills the context window every step recomputes the last ``context_length``
tokens without the cache (the book's ``idx[:, -context_size:]``); cached and uncached
generation therefore produce the same tokens. Randomness comes only from the
``torch.Generator`` passed in (never the global seed), so concurrent users do not interfere.
"""
from __future__ import annotations

import codecs
import math
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Iterator, Sequence

import torch

from .model import KVCache, eval_mode

LN2 = math.log(2.0)

# The book's decoding toy example: a 9-word vocabulary and the next-token logits after
# "every effort moves you" (chapter 5.3).
BOOK_TOY_VOCAB = ("closer", "every", "effort", "forward", "inches", "moves", "pizza", "toward", "you")
BOOK_TOY_LOGITS = (4.51, 0.89, -1.90, 6.75, 1.63, -1.62, -1.89, 6.28, 1.79)


# ---------------------------------------------------------------- settings

@dataclass(frozen=True)
class SamplingSettings:
    """How to pick the next token. ``temperature == 0`` means greedy (argmax)."""

    temperature: float = 0.0
    top_k: int | None = None          # keep the k most likely tokens (None: all)
    top_p: float | None = None        # keep the smallest set with this much probability (None: all)
    max_new_tokens: int = 50
    eos_id: int | None = None         # stop when this token is picked
    use_cache: bool = True            # KV cache on (off recomputes the whole window each step)
    n_candidates: int = 10            # how many top tokens each Step records

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def problems(self, vocab_size: int | None = None) -> list[str]:
        """What is wrong with these settings, in words (empty when fine)."""
        out = []
        t = self.temperature
        if not isinstance(t, (int, float)) or math.isnan(t) or math.isinf(t) or t < 0:
            out.append(f"temperature must be a finite number ≥ 0 (0 = greedy), got {t}")
        if self.top_k is not None:
            if int(self.top_k) < 1:
                out.append(f"top-k must be at least 1, got {self.top_k}")
            elif vocab_size is not None and int(self.top_k) > vocab_size:
                out.append(f"top-k must be at most the vocabulary size {vocab_size:,}, got {self.top_k:,}")
        if self.top_p is not None:
            p = self.top_p
            if math.isnan(p) or not 0.0 < p <= 1.0:
                out.append(f"top-p must be in (0, 1], got {p}")
        if int(self.max_new_tokens) < 0:
            out.append(f"max new tokens must be ≥ 0, got {self.max_new_tokens}")
        if int(self.n_candidates) < 1:
            out.append(f"n_candidates must be at least 1, got {self.n_candidates}")
        return out

    def check(self, vocab_size: int | None = None) -> "SamplingSettings":
        problems = self.problems(vocab_size)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def with_(self, **changes) -> "SamplingSettings":
        return replace(self, **changes)

    def describe(self) -> str:
        """A short human label, e.g. ``greedy`` or ``top-k 40 → T 0.8 → top-p 0.95``."""
        if self.greedy:
            return "greedy (argmax)"
        return " → ".join(step.label for step in logits_pipeline(self)) or "T 1 (plain sampling)"


# ---------------------------------------------------------------- logits steps

NEG_INF = float("-inf")


@dataclass(frozen=True)
class TopK:
    """Keep the k largest logits (ties with the k-th are kept, as in the book), mask the rest."""

    k: int

    @property
    def label(self) -> str:
        return f"top-k {self.k}"

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        if self.k >= logits.shape[-1]:
            return logits
        kth = torch.topk(logits, self.k, dim=-1).values[..., -1:]
        return logits.masked_fill(logits < kth, NEG_INF)


@dataclass(frozen=True)
class Temperature:
    """Divide logits by T: T < 1 sharpens the distribution, T > 1 flattens it."""

    t: float

    @property
    def label(self) -> str:
        return f"T {self.t:g}"

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return logits if self.t == 1.0 else logits / self.t


@dataclass(frozen=True)
class TopP:
    """Nucleus: keep the smallest set of most likely tokens whose probability reaches p."""

    p: float

    @property
    def label(self) -> str:
        return f"top-p {self.p:g}"

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        if self.p >= 1.0:
            return logits
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs   # mass of the tokens ranked above each one
        drop_sorted = mass_before >= self.p          # the set already reached p without it
        drop_sorted[..., 0] = False                  # always keep the most likely token
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        return logits.masked_fill(drop, NEG_INF)


LogitsStep = Callable[[torch.Tensor], torch.Tensor]


def logits_pipeline(settings: SamplingSettings) -> list[LogitsStep]:
    """The steps that turn raw logits into sampling logits, in the order they run."""
    steps: list[LogitsStep] = []
    if settings.top_k is not None:
        steps.append(TopK(int(settings.top_k)))
    if settings.temperature > 0.0 and settings.temperature != 1.0:
        steps.append(Temperature(float(settings.temperature)))
    if settings.top_p is not None and settings.top_p < 1.0:
        steps.append(TopP(float(settings.top_p)))
    return steps


def process_logits(logits: torch.Tensor, settings: SamplingSettings) -> torch.Tensor:
    for step in logits_pipeline(settings):
        logits = step(logits)
    return logits


def softmax_with_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """The book's helper: softmax(logits / T) over the last axis."""
    return torch.softmax(logits / temperature, dim=-1)


def next_token_probs(logits: torch.Tensor, settings: SamplingSettings) -> torch.Tensor:
    """The distribution the next token is drawn from (one-hot on the argmax when greedy)."""
    if settings.greedy:
        probs = torch.zeros_like(logits, dtype=torch.float32)
        return probs.scatter_(-1, logits.argmax(dim=-1, keepdim=True), 1.0)
    return torch.softmax(process_logits(logits, settings).float(), dim=-1)


def sample_next_token(logits: torch.Tensor, settings: SamplingSettings,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """logits [B, V] -> next ids [B, 1]: argmax when greedy, else one multinomial draw."""
    if settings.greedy:
        return logits.argmax(dim=-1, keepdim=True)
    probs = torch.softmax(process_logits(logits, settings).float(), dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)


def make_generator(seed: int | None, device: str | torch.device = "cpu") -> torch.Generator:
    """A private random stream for one request (a fresh random seed when ``seed`` is None)."""
    g = torch.Generator(device=device)
    if seed is None:
        g.seed()
    else:
        g.manual_seed(int(seed))
    return g


def entropy_bits(probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in bits over the last axis (0·log 0 counts as 0)."""
    return torch.special.entr(probs.float()).sum(dim=-1) / LN2


def next_token_logits(model, ids: Sequence[int]) -> torch.Tensor:
    """The model's raw next-token logits [V] after ``ids`` (its last context window)."""
    idx = torch.tensor([list(ids)[-model.cfg.context_length:]], dtype=torch.long, device=model.device)
    if idx.shape[1] == 0:
        raise ValueError("need at least one token")
    with eval_mode(model), torch.inference_mode():
        return model(idx, last_only=True)[0, -1].float()


# ---------------------------------------------------------------- the decoding loop

_layout_lock = threading.Lock()


def prepare_for_decoding(model) -> None:
    """Store every Linear weight input-major (same values and shapes, transposed memory).

    Generating one token multiplies a single row by each weight matrix; that is limited by
    how fast the weights stream from memory, and on CPUs the BLAS kernel for ``x @ W`` with
    W laid out [in, out] streams faster than for the [out, in] layout PyTorch keeps (for
    GPT-2's 768×50,257 output head: ~11 vs ~18 ms here). Done once per model, on CPU, only
    for a model in eval mode; the tied token embedding follows the head. Idempotent and
    thread-safe; numerics are unchanged up to float rounding.

    It puts new Parameter objects into the model, so call it on inference-only models (the
    shared ones from ``load_model``), never on a model an optimizer is holding: that is why
    ``generate`` does not call it by itself.
    """
    if model.training or getattr(model, "_decode_layout", False) or model.device.type != "cpu":
        return
    with _layout_lock:
        if getattr(model, "_decode_layout", False):
            return
        holders: dict[int, list[tuple[torch.nn.Module, str]]] = {}
        for module in model.modules():
            for name, param in module.named_parameters(recurse=False):
                holders.setdefault(id(param), []).append((module, name))
        for linear in [m for m in model.modules() if isinstance(m, torch.nn.Linear)]:
            old = linear.weight
            if not old.is_contiguous():  # already done through a tied holder
                continue
            with torch.no_grad():
                new = torch.nn.Parameter(old.detach().t().contiguous().t(), requires_grad=old.requires_grad)
            # A new Parameter object (not ``.data =``): a forward pass running in another
            # thread keeps the old tensor alive until it is done. One weight at a time, so
            # memory grows by one matrix at most; every holder (a tied embedding) gets it.
            for module, name in holders[id(old)]:
                setattr(module, name, new)
            del old
        model._decode_layout = True


def _decode_steps(model, idx: torch.Tensor, n_steps: int, use_cache: bool, window: int,
                  vocab_size: int | None = None):
    """A coroutine over decoding steps: yields (next-token logits [B, V], whether they came
    from a single cached step, how many positions that forward pass processed); the caller
    ``send``s the chosen ids [B, 1] back.

    The model sees at most the last ``window`` tokens. The KV cache (sized for this request
    only, not the whole context) serves steps while it has room; after that every step
    recomputes the window.
    """
    seq = idx
    cache = None
    if use_cache:
        capacity = min(window, seq.shape[1] + n_steps)
        cfg = model.cfg.with_(context_length=capacity)
        p = model.tok_emb.weight
        cache = KVCache(cfg, seq.shape[0], device=p.device, dtype=p.dtype)
    with torch.inference_mode():
        logits = model(seq[:, -window:], kv_cache=cache, last_only=True)[:, -1, :]
    from_cache, positions = False, min(seq.shape[1], window)
    for step in range(n_steps):
        if vocab_size is not None:
            logits = logits[:, :vocab_size]
        next_ids = yield logits, from_cache, positions
        seq = torch.cat((seq, next_ids), dim=1)
        if step == n_steps - 1:
            return
        with torch.inference_mode():
            if cache is not None and cache.length < capacity:
                logits = model(next_ids, kv_cache=cache, last_only=True)[:, -1, :]
                from_cache, positions = True, 1
            else:  # the window is full (or no cache): positions shift, recompute it all
                cache = None
                logits = model(seq[:, -window:], last_only=True)[:, -1, :]
                from_cache, positions = False, min(seq.shape[1], window)


def generate(model, idx: torch.Tensor, max_new_tokens: int, context_size: int | None = None,
             temperature: float = 0.0, top_k: int | None = None, eos_id: int | None = None, *,
             top_p: float | None = None, use_cache: bool = True,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """The book's ``generate``: idx [B, T] -> [B, T + new] (top-k, temperature, multinomial;
    argmax when ``temperature`` is 0). With batch size 1, picking ``eos_id`` stops generation
    and the eos token is not appended (as in the book); in a batch, rows that have finished
    are padded with ``eos_id`` until every row has finished.

    ``context_size`` defaults to the model's context length and may only shrink it.
    """
    settings = SamplingSettings(temperature=float(temperature), top_k=top_k, top_p=top_p,
                                max_new_tokens=int(max_new_tokens), eos_id=eos_id,
                                use_cache=use_cache).check(model.cfg.vocab_size)
    if idx.dim() != 2 or idx.shape[1] == 0:
        raise ValueError(f"idx must be [batch, tokens] with at least one token, got {tuple(idx.shape)}")
    if settings.max_new_tokens == 0:
        return idx
    window = model.cfg.context_length if context_size is None else min(int(context_size), model.cfg.context_length)
    out = idx
    finished = torch.zeros(idx.shape[0], dtype=torch.bool, device=idx.device)
    with eval_mode(model):
        steps = _decode_steps(model, idx, settings.max_new_tokens, settings.use_cache, window)
        logits, _, _ = next(steps)
        while True:
            with torch.inference_mode():
                next_ids = sample_next_token(logits, settings, generator)
            if eos_id is not None:
                is_eos = next_ids[:, 0] == eos_id
                if idx.shape[0] == 1 and bool(is_eos[0]):
                    break
                next_ids = next_ids.masked_fill(finished.unsqueeze(1), eos_id)
                finished = finished | is_eos
            out = torch.cat((out, next_ids), dim=1)
            if eos_id is not None and bool(finished.all()):
                break
            try:
                logits, _, _ = steps.send(next_ids)
            except StopIteration:
                break
        steps.close()
    return out


def generate_text_simple(model, idx: torch.Tensor, max_new_tokens: int, context_size: int | None = None):
    """The book's chapter-4 greedy loop (argmax at every step)."""
    return generate(model, idx, max_new_tokens, context_size, temperature=0.0)


# ---------------------------------------------------------------- streaming with details

@dataclass
class Candidate:
    token_id: int
    prob_before: float   # in the model's own distribution (softmax of the raw logits)
    prob_after: float    # in the distribution sampled from (after temperature/top-k/top-p)


@dataclass
class Step:
    """One generated token and what the model considered at that point."""

    index: int                 # 0 for the first new token
    token_id: int
    prob_before: float         # the pick in the model's distribution
    prob_after: float          # the pick in the distribution sampled from
    entropy_bits: float        # of the model's distribution (how unsure it was)
    entropy_after_bits: float  # of the distribution sampled from
    kept: int                  # tokens left with non-zero probability after filtering
    candidates: list[Candidate] = field(default_factory=list)  # top tokens by model probability
    from_cache: bool = False   # logits came from a single cached step (not a full window)
    positions: int = 0         # positions the forward pass behind this step processed
    elapsed_s: float = 0.0     # since generation started, when this token was ready
    is_eos: bool = False       # the stop token: generation ends here (not part of the text)

    def to_dict(self) -> dict:
        return asdict(self)


def _as_ids(ids, device) -> torch.Tensor:
    if isinstance(ids, torch.Tensor):
        t = ids.detach().to(device=device, dtype=torch.long)
        if t.dim() == 2:
            if t.shape[0] != 1:
                raise ValueError("stream_generate handles one sequence; pass ids of shape [T] or [1, T]")
            t = t[0]
        if t.dim() != 1:
            raise ValueError(f"ids must be [T] or [1, T], got {tuple(ids.shape)}")
    else:
        t = torch.tensor(list(ids), dtype=torch.long, device=device)
    if t.numel() == 0:
        raise ValueError("generation needs at least one prompt token")
    return t.unsqueeze(0)


def stream_generate(model, ids, settings: SamplingSettings, generator: torch.Generator | None = None,
                    vocab_size: int | None = None, details: bool = True) -> Iterator[Step]:
    """Generate one token at a time, yielding a ``Step`` for each.

    ``ids``: the prompt (list of ints, [T] or [1, T] tensor); only its last
    ``context_length`` tokens are seen. ``vocab_size`` restricts picks to ids the tokenizer
    can decode (when the model's head is larger). With ``details=False`` steps carry only
    the token id, its probability and timing (less work per token). When the pick equals
    ``settings.eos_id`` a step with ``is_eos=True`` is yielded and generation stops.
    """
    model_vocab = model.cfg.vocab_size if vocab_size is None else min(vocab_size, model.cfg.vocab_size)
    settings.check(model_vocab)
    idx = _as_ids(ids, model.device)
    if settings.max_new_tokens == 0:
        return
    n_cand = min(int(settings.n_candidates), model_vocab)
    start = time.perf_counter()
    with eval_mode(model):
        steps = _decode_steps(model, idx, settings.max_new_tokens, settings.use_cache,
                              model.cfg.context_length, vocab_size)
        logits, from_cache, positions = next(steps)
        for index in range(settings.max_new_tokens):
            with torch.inference_mode():
                raw = logits[0].float()
                after = next_token_probs(raw, settings)
                if settings.greedy:
                    token = int(raw.argmax())
                else:
                    token = int(torch.multinomial(after, 1, generator=generator))
                step = Step(index=index, token_id=token, prob_before=0.0,
                            prob_after=float(after[token]), entropy_bits=0.0, entropy_after_bits=0.0,
                            kept=0, from_cache=from_cache, positions=positions,
                            is_eos=token == settings.eos_id)
                if details:
                    before = torch.softmax(raw, dim=-1)
                    top = torch.topk(before, n_cand)
                    step.prob_before = float(before[token])
                    step.entropy_bits = float(entropy_bits(before))
                    step.entropy_after_bits = float(entropy_bits(after))
                    step.kept = int((after > 0).sum())
                    after_top = after[top.indices].tolist()
                    step.candidates = [Candidate(int(i), float(p), float(q))
                                       for i, p, q in zip(top.indices.tolist(), top.values.tolist(), after_top)]
            step.elapsed_s = time.perf_counter() - start
            yield step
            if step.is_eos or index == settings.max_new_tokens - 1:
                break
            try:
                logits, from_cache, positions = steps.send(torch.tensor([[token]], device=idx.device))
            except StopIteration:
                break
        steps.close()


# ---------------------------------------------------------------- text helpers

@dataclass
class Prompt:
    """A prompt's ids as the model will see them, and what was done to fit it."""

    ids: list[int]
    dropped: int = 0               # tokens cut from the left to fit the context
    from_endoftext: bool = False   # the prompt was empty: generation starts at <|endoftext|>


def encode_prompt_keep_last(tokenizer, text: str, context_length: int) -> Prompt:
    """Encode a prompt for generation: an empty prompt starts from ``<|endoftext|>`` (when the
    tokenizer has it); a prompt longer than the context keeps only its last tokens."""
    ids = tokenizer.encode(text) if text else []
    from_eot = False
    if not ids:
        eot = getattr(tokenizer, "eot_id", None)
        if eot is None:
            raise ValueError("the prompt is empty and this tokenizer has no <|endoftext|> token to start from")
        ids, from_eot = [int(eot)], True
    dropped = max(0, len(ids) - context_length)
    return Prompt(ids=ids[dropped:], dropped=dropped, from_endoftext=from_eot)


class IncrementalDecoder:
    """Turn token ids into text pieces as they arrive. Byte-level BPE can split one character
    over several tokens; such bytes are held until the character is complete, so pieces
    join to exactly ``tokenizer.decode(ids)``."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, token_id: int) -> str:
        return self._utf8.decode(self.tokenizer.token_bytes(int(token_id)))

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True)


def token_pieces(tokenizer, ids: Sequence[int]) -> list[str]:
    """One text piece per token (see ``IncrementalDecoder``); the last one is flushed."""
    dec = IncrementalDecoder(tokenizer)
    pieces = [dec.feed(i) for i in ids]
    if pieces:
        pieces[-1] += dec.flush()
    return pieces


@dataclass
class RunSummary:
    tokens: int
    mean_prob: float          # average model probability of the picked tokens
    surprisal_bits: float     # average -log2 p of the picks (the text's cross-entropy in bits)
    mean_entropy_bits: float  # average uncertainty of the model over the steps
    distinct: float           # share of distinct token ids among the picks (low = repetitive)
    tokens_per_s: float
    first_token_s: float


def summarize_steps(steps: Sequence[Step]) -> RunSummary:
    """Averages over a run's steps (the stop token, if any, included: it was a pick)."""
    n = len(steps)
    if n == 0:
        return RunSummary(0, float("nan"), float("nan"), float("nan"), float("nan"), float("nan"), float("nan"))
    probs = [max(s.prob_before, 1e-45) for s in steps]
    elapsed = steps[-1].elapsed_s
    return RunSummary(
        tokens=n,
        mean_prob=sum(probs) / n,
        surprisal_bits=-sum(math.log2(p) for p in probs) / n,
        mean_entropy_bits=sum(s.entropy_bits for s in steps) / n,
        distinct=len({s.token_id for s in steps}) / n,
        tokens_per_s=n / elapsed if elapsed > 0 else float("nan"),
        first_token_s=steps[0].elapsed_s,
    )


# ---------------------------------------------------------------- measuring

@dataclass
class SpeedReport:
    new_tokens: int
    seconds: float
    first_token_s: float   # prompt processing + first token
    use_cache: bool
    positions: int = 0     # token positions pushed through the model in all
    tokens: list[int] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else float("nan")

    @property
    def decode_tokens_per_s(self) -> float:
        """Speed after the first token (the prompt's prefill excluded)."""
        rest = self.seconds - self.first_token_s
        return (self.new_tokens - 1) / rest if self.new_tokens > 1 and rest > 0 else float("nan")


def measure_speed(model, ids, new_tokens: int, use_cache: bool = True,
                  time_limit_s: float | None = None) -> SpeedReport:
    """Time greedy generation of up to ``new_tokens`` tokens (no stop token, minimal
    bookkeeping); stops early at ``time_limit_s``."""
    settings = SamplingSettings(max_new_tokens=int(new_tokens), use_cache=use_cache, n_candidates=1)
    start = time.perf_counter()
    first = None
    n = positions = 0
    tokens: list[int] = []
    for step in stream_generate(model, ids, settings, details=False):
        n += 1
        positions += step.positions
        tokens.append(step.token_id)
        if first is None:
            first = step.elapsed_s
        if time_limit_s is not None and time.perf_counter() - start > time_limit_s:
            break
    seconds = time.perf_counter() - start
    return SpeedReport(new_tokens=n, seconds=seconds, first_token_s=first or 0.0, use_cache=use_cache,
                       positions=positions, tokens=tokens)
