"""The embedding projector (chapter 2.7-2.8): what the token and position tables hold.

Everything reads the model's own tables (``model.tok_emb.weight`` [V, d] and
``model.pos_emb.weight`` [context, d]) or its traced forward pass; nothing is
re-learned here. PCA is an exact eigen-decomposition of the d×d covariance
(deterministic, unlike randomised low-rank PCA) and is cached per weight
version, so a 50k-token table is decomposed once per model.
"""
from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch

from ..model import GPTModel
from .token_text import token_label

MAX_POINTS = 20_000       # plotly stays responsive (3-D scatters especially) below this
MAX_CHOSEN = 40           # labelled tokens per plot
MAX_NEIGHBOURS = 100
MAX_POSITIONS = 512       # heatmaps stay <= 512 x 512
MAX_BATCH = 16
PROCRUSTES_ROWS = 20_000  # rows used to align two embedding tables


class TokenNotFound(ValueError):
    """Text that is not one token of the vocabulary; ``pieces`` shows how BPE splits it."""

    def __init__(self, message: str, pieces: list[tuple[int, str]] | None = None, query: str = ""):
        super().__init__(message)
        self.pieces = pieces or []
        self.query = query


# ---------------------------------------------------------------- tokens

def usable_vocab(model: GPTModel, tokenizer) -> int:
    """Rows of the table that the tokenizer can name (a model may pad its vocabulary)."""
    return min(int(model.tok_emb.weight.shape[0]), int(tokenizer.n_vocab))


def _encode(tokenizer, text: str) -> list[int]:
    # A special-token literal such as <|endoftext|> is a real row of the table.
    return list(tokenizer.encode(text))


def split_into_pieces(tokenizer, text: str) -> list[tuple[int, str]]:
    return [(i, token_label(tokenizer, i)) for i in _encode(tokenizer, text)]


@dataclass(frozen=True)
class TokenMatch:
    id: int
    label: str
    query: str


def resolve_token(tokenizer, text: str, n_vocab: int | None = None) -> TokenMatch:
    """Find the single token a person means by ``text``.

    ``#123`` is token id 123. A word typed without a leading space is first tried
    as " word" (how GPT-2 sees a word inside a sentence), then as "word".
    Raises TokenNotFound with the BPE pieces when neither is one token.
    """
    n_vocab = int(n_vocab if n_vocab is not None else tokenizer.n_vocab)
    raw = text if text is not None else ""
    stripped = raw.strip()
    if not stripped:
        raise TokenNotFound("no token given: type a word, a piece of a word, or #id")
    if stripped.startswith("#") and stripped[1:].isdigit():
        tid = int(stripped[1:])
        if tid >= n_vocab:
            raise TokenNotFound(f"token id {tid} is out of range: this vocabulary has ids 0 to {n_vocab - 1}",
                                query=raw)
        return TokenMatch(tid, token_label(tokenizer, tid), raw)
    candidates = [raw] if raw.startswith(" ") else [" " + stripped, stripped]
    if raw.startswith(" ") and raw != " " + stripped:
        candidates.append(" " + stripped)
    for cand in candidates:
        ids = _encode(tokenizer, cand)
        if len(ids) == 1 and ids[0] < n_vocab:
            return TokenMatch(ids[0], token_label(tokenizer, ids[0]), raw)
    pieces = split_into_pieces(tokenizer, candidates[0])
    shown = " + ".join(f"'{label}'" for _, label in pieces)
    raise TokenNotFound(
        f"'{stripped}' is not a single token of this vocabulary: byte-pair encoding splits it into "
        f"{len(pieces)} pieces ({shown}). Pick one of the pieces, or a more common word.", pieces, raw)


def parse_token_list(text: str, limit: int = MAX_CHOSEN) -> list[str]:
    """Comma-separated words (commas, because tokens may contain spaces)."""
    items = [w for w in (text or "").split(",") if w.strip()]
    return items[:limit]


def resolve_tokens(tokenizer, words: list[str], n_vocab: int) -> tuple[list[TokenMatch], list[TokenNotFound]]:
    """Resolve many words; the ones that fail come back separately, with their pieces."""
    found, missing, seen = [], [], set()
    for w in words:
        try:
            m = resolve_token(tokenizer, w, n_vocab)
        except TokenNotFound as exc:
            missing.append(exc)
            continue
        if m.id not in seen:
            seen.add(m.id)
            found.append(m)
    return found, missing


# ---------------------------------------------------------------- PCA

@dataclass(frozen=True)
class PCABasis:
    mean: torch.Tensor         # [d]
    components: torch.Tensor   # [d, k], columns are unit principal directions
    explained: np.ndarray      # [k] fraction of the total variance along each direction

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) @ self.components


def pca(matrix: torch.Tensor, k: int = 3) -> PCABasis:
    """Top-k principal directions of the rows of ``matrix`` [n, d].

    Eigen-decomposition of the covariance: exact and deterministic. Each direction's
    sign is fixed so that its largest loading is positive (plots do not flip).
    """
    x = matrix.detach().float().cpu()
    n, d = x.shape
    k = max(1, min(int(k), d))
    mean = x.mean(0)
    xc = x - mean
    cov = (xc.T @ xc) / max(n, 1)
    eigvals, eigvecs = torch.linalg.eigh(cov)            # ascending; float32 is plenty for the top few
    order = torch.argsort(eigvals, descending=True)[:k]
    comps = eigvecs[:, order]
    signs = torch.sign(comps.gather(0, comps.abs().argmax(0, keepdim=True)))
    comps = (comps * torch.where(signs == 0, torch.ones_like(signs), signs)).float()
    total = eigvals.clamp_min(0).sum().item()
    explained = (eigvals[order].clamp_min(0) / total).numpy() if total > 0 else np.zeros(k)
    return PCABasis(mean, comps, explained.astype(np.float32))


class _TableCache:
    """Per-table results keyed by the tensor's identity and in-place version.

    Entries hold a weak reference to their tensor, so a new tensor that happens to get
    a freed one's id() is never served the old table's results.
    """

    def __init__(self, size: int = 4):
        self.size = size
        self.data: "OrderedDict[tuple, tuple]" = OrderedDict()
        self.lock = threading.Lock()

    def get(self, weight: torch.Tensor, tag: str, compute):
        try:
            version = weight._version
        except RuntimeError:  # an inference tensor: no version counter, and frozen outside inference mode
            version = None
        key = (id(weight), version, tuple(weight.shape), tag)
        with self.lock:
            entry = self.data.get(key)
            if entry is not None and entry[0]() is weight:
                self.data.move_to_end(key)
                return entry[1]
        value = compute()
        with self.lock:
            self.data[key] = (weakref.ref(weight), value)
            while len(self.data) > self.size:
                self.data.popitem(last=False)
        return value


_cache = _TableCache()


def token_pca(model: GPTModel, n_vocab: int, k: int = 3) -> PCABasis:
    w = model.tok_emb.weight
    return _cache.get(w, f"pca{n_vocab}:{k}", lambda: pca(w[:n_vocab], k))


def _row_norms(weight: torch.Tensor, n_vocab: int) -> torch.Tensor:
    return _cache.get(weight, f"norms{n_vocab}",
                      lambda: weight[:n_vocab].detach().float().norm(dim=1).clamp_min(1e-12))


# ---------------------------------------------------------------- the projector

@dataclass
class Projection:
    coords: np.ndarray          # [n, dims] float32
    ids: np.ndarray             # [n] token ids
    labels: list[str]           # [n] readable token strings
    chosen: list[int]           # indices into coords of the chosen tokens
    explained: np.ndarray       # [dims] variance fraction per axis
    vocab_points: int           # rows in the table
    notice: str = ""


def project_token_embeddings(model: GPTModel, tokenizer, chosen_ids: list[int] | None = None,
                             dims: int = 2, n_points: int = 5000, seed: int = 0) -> Projection:
    """Token embeddings on their first ``dims`` principal components.

    At most MAX_POINTS rows are plotted: a seeded random sample of the vocabulary
    plus every chosen token (always included and listed first in ``chosen``).
    """
    if dims not in (2, 3):
        raise ValueError("dims must be 2 or 3")
    n_vocab = usable_vocab(model, tokenizer)
    chosen_ids = [int(i) for i in dict.fromkeys(chosen_ids or []) if 0 <= int(i) < n_vocab][:MAX_CHOSEN]
    notice = ""
    n_points = int(n_points)
    if n_points > MAX_POINTS:
        notice = f"{n_points:,} points requested; showing {MAX_POINTS:,} (the cap that keeps the plot responsive)."
        n_points = MAX_POINTS
    n_points = max(n_points, len(chosen_ids), 1)
    n_points = min(n_points, n_vocab)
    basis = token_pca(model, n_vocab, 3)
    gen = torch.Generator().manual_seed(int(seed))
    chosen_t = torch.tensor(chosen_ids, dtype=torch.long)
    others = torch.ones(n_vocab, dtype=torch.bool)
    others[chosen_t] = False
    pool = torch.nonzero(others).squeeze(1)
    pick = pool[torch.randperm(len(pool), generator=gen)[: n_points - len(chosen_ids)]]
    ids = torch.cat([chosen_t, torch.sort(pick).values])
    with torch.no_grad():
        coords = basis.project(model.tok_emb.weight[ids])[:, :dims]
    labels = [token_label(tokenizer, i) for i in ids.tolist()]
    return Projection(coords.numpy().astype(np.float32), ids.numpy(), labels,
                      list(range(len(chosen_ids))), basis.explained[:dims], n_vocab, notice)


# ---------------------------------------------------------------- neighbours and analogies

@dataclass(frozen=True)
class Neighbour:
    id: int
    label: str
    score: float   # cosine similarity


def nearest_to_vector(model: GPTModel, tokenizer, vector: torch.Tensor, k: int = 10,
                      exclude: tuple[int, ...] = ()) -> list[Neighbour]:
    """Tokens whose embedding has the highest cosine similarity with ``vector``."""
    n_vocab = usable_vocab(model, tokenizer)
    k = max(1, min(int(k), MAX_NEIGHBOURS, n_vocab - len(exclude)))
    w = model.tok_emb.weight
    with torch.no_grad():
        v = vector.detach().float().reshape(-1)
        sims = (w[:n_vocab].float() @ v) / (_row_norms(w, n_vocab) * v.norm().clamp_min(1e-12))
        if exclude:
            sims[torch.tensor(list(exclude), dtype=torch.long)] = float("-inf")
        scores, ids = torch.topk(sims, k)
    return [Neighbour(int(i), token_label(tokenizer, int(i)), float(s)) for s, i in zip(scores, ids)]


def nearest_neighbours(model: GPTModel, tokenizer, token_id: int, k: int = 10) -> list[Neighbour]:
    """Cosine nearest neighbours of one token; the token itself comes first (similarity 1)."""
    return nearest_to_vector(model, tokenizer, model.tok_emb.weight[int(token_id)], k)


@dataclass
class Analogy:
    a: TokenMatch
    b: TokenMatch
    c: TokenMatch
    results: list[Neighbour]
    input_scores: dict[int, float]   # how close a, b, c themselves are to a - b + c


def analogy(model: GPTModel, tokenizer, a: str, b: str, c: str, k: int = 10) -> Analogy:
    """a - b + c (king - man + woman), the inputs excluded from the answers.

    Each vector is scaled to unit length first so that a frequent token's long
    vector does not dominate the sum.
    """
    n_vocab = usable_vocab(model, tokenizer)
    ma, mb, mc = (resolve_token(tokenizer, t, n_vocab) for t in (a, b, c))
    w = model.tok_emb.weight
    with torch.no_grad():
        unit = [w[m.id].float() / w[m.id].float().norm().clamp_min(1e-12) for m in (ma, mb, mc)]
        target = unit[0] - unit[1] + unit[2]
        inputs = tuple(dict.fromkeys((ma.id, mb.id, mc.id)))
        results = nearest_to_vector(model, tokenizer, target, k, exclude=inputs)
        norm_t = target.norm().clamp_min(1e-12)
        input_scores = {i: float(w[i].float() @ target / (w[i].float().norm().clamp_min(1e-12) * norm_t))
                        for i in inputs}
    return Analogy(ma, mb, mc, results, input_scores)


# ---------------------------------------------------------------- positions

def positional_similarity(model: GPTModel, max_positions: int = 128) -> np.ndarray:
    """Cosine similarity between the first ``max_positions`` position vectors [P, P]."""
    p = max(1, min(int(max_positions), MAX_POSITIONS, model.pos_emb.weight.shape[0]))
    with torch.no_grad():
        x = model.pos_emb.weight[:p].float()
        x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return (x @ x.T).numpy().astype(np.float32)


def positional_components(model: GPTModel, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Every position vector on the table's first k principal components: ([context, k], explained)."""
    w = model.pos_emb.weight
    basis = _cache.get(w, f"pca:{k}", lambda: pca(w, k))
    with torch.no_grad():
        return basis.project(w).numpy().astype(np.float32), basis.explained


# ---------------------------------------------------------------- token + position = input

@dataclass
class InputEmbedding:
    ids: torch.Tensor                 # [B, T]
    tokens: list[list[str]]           # [B][T]
    tok_emb: np.ndarray               # [B, T, d]
    pos_emb: np.ndarray               # [T, d] (one table row per position, shared by the batch)
    embed: np.ndarray                 # [B, T, d] = tok_emb + pos_emb
    text_tokens: int                  # tokens in the whole text
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)


def input_embedding(model: GPTModel, tokenizer, text: str, batch_size: int = 8,
                    length: int = 4) -> InputEmbedding:
    """Cut the text into ``batch_size`` windows of ``length`` tokens (stride = length,
    as the book's batch 8 × 4 tokens example) and read tok_emb, pos_emb and their sum
    from one traced forward pass."""
    ids = _encode(tokenizer, text)
    if not ids:
        raise ValueError("the text has no tokens")
    n_vocab = usable_vocab(model, tokenizer)
    if max(ids) >= n_vocab:
        raise ValueError(f"token id {max(ids)} is outside the model's vocabulary of {n_vocab}")
    context = model.pos_emb.weight.shape[0]
    length = max(1, min(int(length), context, len(ids)))
    rows = max(1, min(int(batch_size), MAX_BATCH, len(ids) // length))
    batch = torch.tensor(ids[: rows * length], dtype=torch.long, device=model.device).view(rows, length)
    trace = model.run_with_trace(batch)
    tok = trace["tok_emb"].float().cpu().numpy()
    pos = trace["pos_emb"][0].float().cpu().numpy()
    emb = trace["embed"].float().cpu().numpy()
    d = tok.shape[-1]
    shapes = {
        "token ids": tuple(batch.shape),
        "token embedding table": tuple(model.tok_emb.weight.shape),
        "position embedding table": tuple(model.pos_emb.weight.shape),
        "token embeddings": tuple(tok.shape),
        "position embeddings": tuple(pos.shape),
        "input embeddings": tuple(emb.shape),
    }
    assert shapes["input embeddings"] == (rows, length, d)
    tokens = [[token_label(tokenizer, i) for i in row] for row in batch.tolist()]
    return InputEmbedding(batch.cpu(), tokens, tok, pos, emb, len(ids), shapes)


# ---------------------------------------------------------------- before vs after

def same_tokenizer(tok_a, tok_b) -> bool:
    """Two tokenizers that give every id the same meaning (so embeddings can be compared)."""
    if tok_a is tok_b:
        return True
    if tok_a.n_vocab != tok_b.n_vocab or getattr(tok_a, "name", None) != getattr(tok_b, "name", None):
        return False
    probe = "Every effort moves you forward: def f(x): return x ** 2  # ünïcode"
    if tok_a.encode(probe) != tok_b.encode(probe):
        return False
    ends = [0, tok_a.n_vocab // 2, tok_a.n_vocab - 1]
    return all(tok_a.token_bytes(i) == tok_b.token_bytes(i) for i in ends)


@dataclass
class Movement:
    id: int
    label: str
    cosine: float                   # between the aligned "before" vector and the "after" vector
    neighbours_before: list[Neighbour]
    neighbours_after: list[Neighbour]

    @property
    def shared_neighbours(self) -> int:
        return len({n.id for n in self.neighbours_before} & {n.id for n in self.neighbours_after})


@dataclass
class Comparison:
    before_xy: np.ndarray   # [n, 2] chosen tokens, "before" model rotated onto "after", after's PCA
    after_xy: np.ndarray    # [n, 2]
    moves: list[Movement]
    explained: np.ndarray   # [2] of the after model's PCA


def _procrustes(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Orthogonal R [d_src, d_dst] minimising ||src R - dst|| (rows already centred)."""
    u, _, vh = torch.linalg.svd(src.T.double() @ dst.double(), full_matrices=False)
    return (u @ vh).float()


def compare_embeddings(before: GPTModel, after: GPTModel, tokenizer, chosen_ids: list[int],
                       k: int = 5, seed: int = 0) -> Comparison:
    """How chosen tokens moved between two models that share a tokenizer.

    Two models may differ by an arbitrary rotation of the embedding space (and even
    by width), so the "before" table is first rotated onto the "after" one with
    orthogonal Procrustes fitted on many tokens; what remains is real movement.
    Neighbour lists need no alignment.
    """
    n_vocab = min(usable_vocab(before, tokenizer), usable_vocab(after, tokenizer))
    chosen_ids = [int(i) for i in dict.fromkeys(chosen_ids) if 0 <= int(i) < n_vocab][:MAX_CHOSEN]
    if not chosen_ids:
        raise ValueError("no chosen token is in both vocabularies")
    gen = torch.Generator().manual_seed(int(seed))
    rows = torch.randperm(n_vocab, generator=gen)[:PROCRUSTES_ROWS]
    with torch.no_grad():
        wa = before.tok_emb.weight[:n_vocab].float()
        wb = after.tok_emb.weight[:n_vocab].float()
        mean_a, mean_b = wa[rows].mean(0), wb[rows].mean(0)
        rot = _procrustes(wa[rows] - mean_a, wb[rows] - mean_b)
        ids = torch.tensor(chosen_ids, dtype=torch.long)
        a_aligned = (wa[ids] - mean_a) @ rot + mean_b
        b_vec = wb[ids]
        cos = torch.nn.functional.cosine_similarity(a_aligned - mean_b, b_vec - mean_b, dim=1)
        basis = token_pca(after, n_vocab, 3)
        before_xy = basis.project(a_aligned)[:, :2].numpy().astype(np.float32)
        after_xy = basis.project(b_vec)[:, :2].numpy().astype(np.float32)
    moves = [Movement(i, token_label(tokenizer, i), float(c),
                      nearest_to_vector(before, tokenizer, before.tok_emb.weight[i], k, exclude=(i,)),
                      nearest_to_vector(after, tokenizer, after.tok_emb.weight[i], k, exclude=(i,)))
             for i, c in zip(chosen_ids, cos.tolist())]
    return Comparison(before_xy, after_xy, moves, basis.explained[:2])
