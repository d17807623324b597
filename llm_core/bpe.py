"""Train a byte-level BPE tokenizer (GPT-2 style) and replay its merges one by one.

The recipe, as in GPT-2:

1. Split the text on ``<|endoftext|>`` so no token ever spans two documents.
2. Pre-tokenise each piece with the GPT-2 regex into chunks (words with their leading
   space, runs of digits, punctuation, whitespace) and count the distinct chunks.
3. Start from the 256 single bytes (id = byte value) and repeatedly merge the most
   frequent adjacent pair into a new token (id 256, 257, ...). Ties go to the pair whose
   byte strings sort first, so the same text always gives the same merges.

Pair counts are updated incrementally: every byte of every distinct chunk is a node in a
linked list, each pair knows the nodes where it starts, so a merge touches only its own
occurrences (one 100k-character chunk with no spaces trains as fast as ordinary text), and
a heap with lazy deletion finds the next best pair.

Measured on this project's 2-core machine: 2.26 M characters of English (pydoc topics +
standard-library docstrings, 19.7k distinct chunks) to a 4,096-token vocabulary (3,839
merges) in 1.2 s of CPU on one core (3.5-8 s wall clock while other jobs shared the cores),
pre-tokenisation included. Replaying all merges over the same 2.26 M characters with
``segment`` takes ~1.1 s (tiktoken: 0.4 s); 5k characters take 3-6 ms.

Encoding with the trained ranks goes through tiktoken (``BPETrainResult.to_tokenizer``).
``BPETrainResult.segment`` is the pure-Python reference with tiktoken's exact rules
(a whole chunk that is a token stays whole; otherwise merge the lowest-ranked adjacent
pair, leftmost first), limited to the first ``n`` merges: what a "replay merges" slider shows.
"""
from __future__ import annotations

import base64
import heapq
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

import regex

from .tokenizers import ENDOFTEXT, GPT2_PATTERN, BPETokenizer, bpe_from_merges

# Beyond this a pure-Python trainer is the wrong tool (GPT-2 itself has 50,000 merges).
MAX_MERGES = 50_000
# 256 byte tokens + <|endoftext|>: the smallest vocabulary a byte-level tokenizer can have.
MIN_VOCAB_SIZE = 257
BASE_VOCAB = 256

Progress = Callable[[int, int], object]


@dataclass(frozen=True)
class Merge:
    """One learned merge: ``left + right -> new`` became token id ``rank``."""

    rank: int
    left: bytes
    right: bytes
    new: bytes
    count: int     # adjacent occurrences of the pair when it won (overlaps like "aaa" count twice)
    replaced: int  # occurrences actually merged (left to right), i.e. tokens saved by this merge


@lru_cache(maxsize=8)
def _compiled(pat_str: str):
    return regex.compile(pat_str)


def _clean(text: str) -> str:
    """Lone surrogates cannot be UTF-8 encoded; replace them as tiktoken does."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _chunk_counts(text: str, pat_str: str) -> tuple[Counter, int]:
    """Distinct pre-tokenised chunks (as bytes) with their frequencies, and the number of
    ``<|endoftext|>`` literals (which are never part of a chunk)."""
    pattern = _compiled(pat_str)
    counts: Counter = Counter()
    pieces = text.split(ENDOFTEXT)
    for piece in pieces:
        if piece:
            counts.update(pattern.findall(piece))
    counts.pop("", None)  # a custom pattern may match empty strings
    return Counter({chunk.encode("utf-8"): n for chunk, n in counts.items()}), len(pieces) - 1


def _resolve_merges(vocab_size: int | None, num_merges: int | None) -> int:
    if vocab_size is not None and num_merges is not None:
        raise ValueError("give vocab_size or num_merges, not both")
    if vocab_size is None and num_merges is None:
        raise ValueError("give vocab_size (e.g. 4096) or num_merges")
    if vocab_size is not None:
        if int(vocab_size) < MIN_VOCAB_SIZE:
            raise ValueError(f"vocab_size must be at least {MIN_VOCAB_SIZE} (256 byte tokens + "
                             f"<|endoftext|>), got {vocab_size}")
        num_merges = int(vocab_size) - MIN_VOCAB_SIZE
    num_merges = int(num_merges)
    if num_merges < 0:
        raise ValueError(f"num_merges must be 0 or more, got {num_merges}")
    if num_merges > MAX_MERGES:
        raise ValueError(f"at most {MAX_MERGES:,} merges (a {MAX_MERGES + MIN_VOCAB_SIZE:,}-token "
                         f"vocabulary) are supported, got {num_merges:,}")
    return num_merges


def train_bpe(text: str, vocab_size: int | None = None, num_merges: int | None = None,
              pat_str: str = GPT2_PATTERN, min_count: int = 2, progress: Progress | None = None,
              *, time_limit_s: float | None = None) -> "BPETrainResult":
    """Learn byte-level BPE merges from ``text``.

    ``vocab_size`` counts the finished tokenizer's whole vocabulary: 256 bytes + merges +
    ``<|endoftext|>`` (so ``vocab_size=4096`` gives 3,839 merges and ``n_vocab == 4096``).
    Alternatively give ``num_merges``. Training stops early when no pair occurs at least
    ``min_count`` times or after ``time_limit_s`` seconds; ``stopped_because`` says which.
    ``progress(done, total)`` is called about a hundred times; raise from it to abort.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    n_wanted = _resolve_merges(vocab_size, num_merges)
    if int(min_count) < 1:
        raise ValueError(f"min_count must be at least 1, got {min_count}")
    min_count = int(min_count)
    text = _clean(text)
    if not text.replace(ENDOFTEXT, ""):
        raise ValueError("no text to train on: the text is empty (or only <|endoftext|> markers)")

    start = time.perf_counter()
    chunk_counts, n_specials = _chunk_counts(text, pat_str)
    chunks = sorted(chunk_counts)  # a fixed order, so everything downstream is deterministic
    n_bytes = sum(len(c) * n for c, n in chunk_counts.items())

    # Every byte of every distinct chunk is a node in a doubly linked list (one list per
    # chunk) weighted by the chunk's frequency. A pair is found by the node of its left
    # token, so a merge costs time in proportion to its occurrences, not to chunk lengths.
    tok: list[int] = []
    prev: list[int] = []
    nxt: list[int] = []
    weight: list[int] = []
    for chunk in chunks:
        first, f = len(tok), chunk_counts[chunk]
        tok.extend(chunk)
        prev.extend(range(first - 1, first + len(chunk) - 1))
        nxt.extend(range(first + 1, first + len(chunk) + 1))
        weight.extend([f] * len(chunk))
        prev[first] = -1
        nxt[-1] = -1

    token_bytes = [bytes([i]) for i in range(BASE_VOCAB)]
    pair_count: dict[tuple[int, int], int] = {}
    pair_where: dict[tuple[int, int], set[int]] = {}
    for i, j in enumerate(nxt):
        if j >= 0:
            pair = (tok[i], tok[j])
            pair_count[pair] = pair_count.get(pair, 0) + weight[i]
            pair_where.setdefault(pair, set()).add(i)
    # Max-heap by count; among equal counts the smaller (left bytes, right bytes) wins.
    heap = [(-n, token_bytes[a], token_bytes[b], a, b) for (a, b), n in pair_count.items()]
    heapq.heapify(heap)

    def forget(pair: tuple[int, int], node: int, f: int) -> None:
        pair_count[pair] -= f
        where = pair_where.get(pair)
        if where is not None:
            where.discard(node)

    merges: list[Merge] = []
    known = {b: i for i, b in enumerate(token_bytes)}
    stopped_because = f"reached {n_wanted} merges"
    report_every = max(1, n_wanted // 100)
    while len(merges) < n_wanted:
        if time_limit_s is not None and time.perf_counter() - start > time_limit_s:
            stopped_because = f"time limit of {time_limit_s:g} s"
            break
        best = None
        while heap:
            neg, left, right, a, b = heapq.heappop(heap)
            current = pair_count.get((a, b), 0)
            if current == -neg:
                best = (a, b, current)
                break
            if current > 0:  # counts of old pairs only fall: re-file it under its count now
                heapq.heappush(heap, (-current, left, right, a, b))
        if best is None or best[2] < min_count:
            stopped_because = f"no pair occurs {min_count} or more times"
            break
        a, b, count = best
        new = token_bytes[a] + token_bytes[b]
        if new in known:
            # Unreachable with left-to-right merging as far as we know; refuse to build a
            # vocabulary with two ids for the same bytes (tiktoken could not represent it).
            raise RuntimeError(f"merge {new!r} would duplicate token {known[new]}")
        new_id = len(token_bytes)
        token_bytes.append(new)
        known[new] = new_id

        replaced = 0
        created: set[tuple[int, int]] = set()
        # Left to right, so "aaa" becomes "aa a" as in the encoder.
        for i in sorted(pair_where.pop((a, b))):
            j = nxt[i]
            if tok[i] != a or j < 0 or tok[j] != b:
                continue  # consumed by the merge just before it (overlap such as "aaa")
            f = weight[i]
            replaced += f
            p, q = prev[i], nxt[j]
            if p >= 0:
                forget((tok[p], a), p, f)
                pair = (tok[p], new_id)
                pair_count[pair] = pair_count.get(pair, 0) + f
                pair_where.setdefault(pair, set()).add(p)
                created.add(pair)
            if q >= 0:
                forget((b, tok[q]), j, f)
                pair = (new_id, tok[q])
                pair_count[pair] = pair_count.get(pair, 0) + f
                pair_where.setdefault(pair, set()).add(i)
                created.add(pair)
            tok[i] = new_id
            tok[j] = -1  # j is gone
            nxt[i] = q
            if q >= 0:
                prev[q] = i
        pair_count.pop((a, b), None)
        for pair in created:
            n = pair_count.get(pair, 0)
            if n > 0:  # new pairs enter the heap once, at their final count
                heapq.heappush(heap, (-n, token_bytes[pair[0]], token_bytes[pair[1]], *pair))
            else:
                pair_count.pop(pair, None)
                pair_where.pop(pair, None)
        merges.append(Merge(new_id, token_bytes[a], token_bytes[b], new, count, replaced))
        if progress is not None and (len(merges) % report_every == 0 or len(merges) == n_wanted):
            progress(len(merges), n_wanted)

    return BPETrainResult(
        merges=merges, pat_str=pat_str, min_count=min_count, requested_merges=n_wanted,
        stopped_because=stopped_because, seconds=time.perf_counter() - start,
        n_chars=len(text), n_bytes=n_bytes, n_chunks=sum(chunk_counts.values()),
        n_distinct_chunks=len(chunks),
        n_specials=n_specials,
    )


def _bpe_chunk(piece: bytes, ranks: dict[bytes, int], limit: int) -> list[bytes]:
    """tiktoken's rules for one chunk, using only ranks below ``limit``.

    A chunk that is itself a token stays whole; otherwise repeatedly merge the adjacent
    pair whose concatenation has the lowest rank (leftmost on ties). Parts are named by
    their start offset; a heap with lazy deletion keeps long chunks O(n log n).
    """
    whole = ranks.get(piece)
    if (whole is not None and whole < limit) or len(piece) == 1:
        return [piece]
    n = len(piece)
    end = list(range(1, n + 1))      # part starting at i spans piece[i:end[i]]
    prev = list(range(-1, n - 1))    # start of the part before the one starting at i
    alive = [True] * n
    heap = []
    for i in range(n - 1):
        rank = ranks.get(piece[i:i + 2])
        if rank is not None and rank < limit:
            heap.append((rank, i, i + 1, i + 2))
    heapq.heapify(heap)
    while heap:
        _, i, mid, stop = heapq.heappop(heap)
        if not (alive[i] and alive[mid] and end[i] == mid and end[mid] == stop):
            continue  # one side has changed since this pair was filed
        alive[mid] = False
        end[i] = stop
        if stop < n:
            prev[stop] = i
            rank = ranks.get(piece[i:end[stop]])
            if rank is not None and rank < limit:
                heapq.heappush(heap, (rank, i, stop, end[stop]))
        p = prev[i]
        if p >= 0:
            rank = ranks.get(piece[p:stop])
            if rank is not None and rank < limit:
                heapq.heappush(heap, (rank, p, i, stop))
    out, i = [], 0
    while i < n:
        out.append(piece[i:end[i]])
        i = end[i]
    return out


@dataclass
class BPETrainResult:
    """Every merge in order, plus what the training saw. Views replay any prefix of merges."""

    merges: list[Merge]
    pat_str: str = GPT2_PATTERN
    min_count: int = 2
    requested_merges: int = 0
    stopped_because: str = ""
    seconds: float = 0.0
    n_chars: int = 0
    n_bytes: int = 0
    n_chunks: int = 0
    n_distinct_chunks: int = 0
    n_specials: int = 0
    # Id of each single byte; None means id = byte value (ours). GPT-2 orders them differently.
    byte_ids: list[int] | None = None
    source: str = "trained"  # or "recovered from <tokenizer>" (then counts are unknown)
    _ranks: dict[bytes, int] | None = field(default=None, repr=False, compare=False)

    # ---------------------------------------------------------------- the vocabulary

    @property
    def num_merges(self) -> int:
        return len(self.merges)

    @property
    def n_vocab(self) -> int:
        """Size of ``to_tokenizer()``'s vocabulary: bytes + merges + <|endoftext|>."""
        return BASE_VOCAB + len(self.merges) + 1

    def _check_n(self, n_merges: int | None) -> int:
        if n_merges is None:
            return len(self.merges)
        n = int(n_merges)
        if not 0 <= n <= len(self.merges):
            raise ValueError(f"n_merges must be between 0 and {len(self.merges)}, got {n_merges}")
        return n

    def mergeable_ranks(self, n_merges: int | None = None) -> dict[bytes, int]:
        """bytes -> id for the 256 bytes and the first ``n_merges`` merges (all by default)."""
        n = self._check_n(n_merges)
        ids = self.byte_ids or range(BASE_VOCAB)
        ranks = {bytes([b]): i for b, i in enumerate(ids)}
        for m in self.merges[:n]:
            ranks[m.new] = m.rank
        return ranks

    def _all_ranks(self) -> dict[bytes, int]:
        if self._ranks is None or len(self._ranks) != BASE_VOCAB + len(self.merges):
            self._ranks = self.mergeable_ranks()
        return self._ranks

    def to_tokenizer(self, name: str = "bpe", n_merges: int | None = None) -> BPETokenizer:
        """A tiktoken-backed tokenizer; ``<|endoftext|>`` gets the next free id."""
        return bpe_from_merges(name, self.mergeable_ranks(n_merges), self.pat_str, with_endoftext=True)

    def vocab_growth(self) -> list[int]:
        """Vocabulary size (bytes + merged tokens, without <|endoftext|>) after each merge."""
        return [BASE_VOCAB + i + 1 for i in range(len(self.merges))]

    def training_token_counts(self) -> list[int]:
        """Tokens in the training text (not counting <|endoftext|>) before any merge and after
        each merge: a merge removes ``replaced`` tokens."""
        if self.source != "trained":
            raise ValueError(f"token counts are unknown: these merges were {self.source}")
        out = [self.n_bytes]
        for m in self.merges:
            out.append(out[-1] - m.replaced)
        return out

    # ---------------------------------------------------------------- replaying merges

    def segment(self, text: str, n_merges: int | None = None) -> list[bytes]:
        """``text`` split into tokens (as bytes) using only the first ``n_merges`` merges.

        Pure Python with tiktoken's rules, so it equals ``to_tokenizer(n_merges=n)``'s
        encoding; ``<|endoftext|>`` comes out as one piece, ``b"<|endoftext|>"``.
        """
        limit = BASE_VOCAB + self._check_n(n_merges)
        ranks = self._all_ranks()
        pattern = _compiled(self.pat_str)
        cache: dict[str, list[bytes]] = {}
        out: list[bytes] = []
        for k, piece in enumerate(_clean(text).split(ENDOFTEXT)):
            if k:
                out.append(ENDOFTEXT.encode("utf-8"))
            for chunk in pattern.findall(piece):
                parts = cache.get(chunk)
                if parts is None:
                    parts = cache[chunk] = _bpe_chunk(chunk.encode("utf-8"), ranks, limit)
                out.extend(parts)
        return out

    def segment_ids(self, text: str, n_merges: int | None = None) -> list[int]:
        """Like ``segment`` but ids; ``<|endoftext|>`` is ``256 + n_merges`` as in
        ``to_tokenizer(n_merges=n_merges)``."""
        n = self._check_n(n_merges)
        ranks = self._all_ranks()
        eot = ENDOFTEXT.encode("utf-8")
        return [BASE_VOCAB + n if (p == eot and p not in ranks) else ranks[p]
                for p in self.segment(text, n)]

    def tokens_after(self, text: str, n_merges: int | None = None) -> int:
        """How many tokens ``text`` takes with the first ``n_merges`` merges."""
        return len(self.segment(text, n_merges))

    # ---------------------------------------------------------------- saving

    def to_dict(self) -> dict:
        """JSON-ready: merges with their counts (bytes as base64) and the training facts."""
        b64 = lambda b: base64.b64encode(b).decode("ascii")  # noqa: E731
        return {
            "kind": "bpe-merges", "pat_str": self.pat_str, "min_count": self.min_count,
            "requested_merges": self.requested_merges, "stopped_because": self.stopped_because,
            "seconds": self.seconds, "n_chars": self.n_chars, "n_bytes": self.n_bytes,
            "n_chunks": self.n_chunks, "n_distinct_chunks": self.n_distinct_chunks,
            "n_specials": self.n_specials, "byte_ids": self.byte_ids, "source": self.source,
            "merges": [[b64(m.left), b64(m.right), m.count, m.replaced] for m in self.merges],
        }

    @classmethod
    def from_tokenizer(cls, tokenizer: BPETokenizer) -> "BPETrainResult":
        """Recover the merge list of an existing byte-level BPE tokenizer (a checkpoint's, or
        GPT-2's 50,000 merges) so it can be replayed. Each token is split the way tiktoken
        would split it using only lower ranks; in a real BPE that gives exactly two parts.
        How often each pair occurred is not stored in a tokenizer, so counts are 0."""
        enc = tokenizer.encoding
        ranks: dict[bytes, int] = enc._mergeable_ranks  # tiktoken keeps no public accessor
        byte_ids = [ranks.get(bytes([b]), -1) for b in range(BASE_VOCAB)]
        if sorted(byte_ids) != list(range(BASE_VOCAB)):
            raise ValueError(f"{tokenizer.name} is not byte-level BPE: ids 0-255 must be the 256 bytes")
        by_rank = sorted((r, t) for t, r in ranks.items() if r >= BASE_VOCAB)
        if [r for r, _ in by_rank] != list(range(BASE_VOCAB, BASE_VOCAB + len(by_rank))):
            raise ValueError(f"{tokenizer.name}'s merge ranks are not consecutive from 256")
        merges = []
        for rank, token in by_rank:
            parts = _bpe_chunk(token, ranks, rank)
            if len(parts) != 2:
                raise ValueError(f"{tokenizer.name}: token {rank} ({token!r}) is not a merge of "
                                 f"two earlier tokens")
            merges.append(Merge(rank, parts[0], parts[1], token, 0, 0))
        identity = byte_ids == list(range(BASE_VOCAB))
        return cls(merges=merges, pat_str=enc._pat_str, requested_merges=len(merges),
                   byte_ids=None if identity else byte_ids, source=f"recovered from {tokenizer.name}")

    @classmethod
    def from_dict(cls, d: dict) -> "BPETrainResult":
        if d.get("kind") != "bpe-merges":
            raise ValueError("not a saved list of BPE merges (kind should be 'bpe-merges')")
        merges = []
        for rank, (left, right, count, replaced) in enumerate(d["merges"], start=BASE_VOCAB):
            lb, rb = base64.b64decode(left), base64.b64decode(right)
            merges.append(Merge(rank, lb, rb, lb + rb, int(count), int(replaced)))
        facts = {k: d[k] for k in ("min_count", "requested_merges", "stopped_because", "seconds",
                                   "n_chars", "n_bytes", "n_chunks", "n_distinct_chunks",
                                   "n_specials", "byte_ids", "source") if k in d}
        return cls(merges=merges, pat_str=d.get("pat_str", GPT2_PATTERN), **facts)
