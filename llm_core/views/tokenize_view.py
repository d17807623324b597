"""What a tokenizer did to a text, in a form views can show: one record per token with its
bytes, its byte and character span in the text, and the tokens that together make up a
character that one token alone only holds part of (CJK, emoji, accents in byte-level BPE).

Nothing here tokenizes: the ids come from the tokenizers in ``llm_core.tokenizers`` (or a
BPE replay in ``llm_core.bpe``); this module lines them up with the text.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Literal, NamedTuple

import numpy as np

from ..tokenizers import (ENDOFTEXT, SIMPLE_SPLIT, UNK, BPETokenizer, SimpleTokenizerV1, SimpleTokenizerV2,
                          SpecialTokenError, gpt2_byte_chars)
from .token_text import readable, readable_parts

SpecialMode = Literal["allow", "plain", "refuse"]
SPECIAL_MODES = ("allow", "plain", "refuse")


class TokenPiece(NamedTuple):
    """One token as it sits in the text (a tuple: tens of thousands are made at once)."""

    index: int          # position in the token sequence
    id: int
    raw: bytes          # the token's bytes (word-level tokenizers: the word as UTF-8)
    byte_start: int     # span in text.encode("utf-8")
    byte_end: int
    char_start: int     # span in the text, widened to whole characters for partial tokens
    char_end: int
    group: int          # tokens with the same group together form whole characters
    partial: bool       # the token's bytes start or end inside a character
    special: bool = False
    unknown: bool = False   # the word was not in the vocabulary and became <|unk|>

    @property
    def label(self) -> str:
        """The token as a string; bytes that are not whole characters appear as <0xE6>."""
        return readable(self.raw)

    @property
    def gpt2_form(self) -> str:
        return gpt2_form(self.raw)

    def describe(self) -> str:
        """A one-line tooltip: id, bytes, and what the token is."""
        kind = ("special token" if self.special else "unknown word → <|unk|>" if self.unknown
                else "part of a character" if self.partial else "token")
        return (f"#{self.index} · id {self.id} · {kind} · bytes {self.byte_start}–{self.byte_end} "
                f"({self.raw.hex(' ')}) · GPT-2 vocab form {self.gpt2_form!r}")

    def to_dict(self) -> dict:
        return {"index": self.index, "id": self.id, "token": UNK if self.unknown else self.label,
                "bytes": [self.byte_start, self.byte_end], "chars": [self.char_start, self.char_end],
                "hex": self.raw.hex(" ") if self.partial else None, "partial": self.partial,
                "special": self.special, "unknown": self.unknown,
                **({"word": self.raw.decode("utf-8")} if self.unknown else {})}


@dataclass
class Tokenization:
    """A text, its ids, and how each id lines up with the text."""

    text: str
    tokenizer: str
    ids: list[int]
    tokens: list[TokenPiece]
    decoded: str
    special_mode: str = "allow"
    notes: list[str] = field(default_factory=list)
    _counts: dict | None = field(default=None, repr=False, compare=False)

    @property
    def round_trip_ok(self) -> bool:
        return self.decoded == self.text

    @property
    def first_mismatch(self) -> int | None:
        """Where ``decoded`` first differs from ``text`` (None when the round trip is exact)."""
        return first_difference(self.text, self.decoded)

    def records(self, limit: int | None = None) -> list[dict]:
        return [t.to_dict() for t in (self.tokens if limit is None else self.tokens[:limit])]

    def groups(self, limit: int | None = None) -> Iterator[list[TokenPiece]]:
        """Tokens bundled by ``group``, in order (stopping once ``limit`` tokens are out)."""
        current: list[TokenPiece] = []
        emitted = 0
        for tok in self.tokens:
            if current and current[0].group != tok.group:
                yield current
                emitted += len(current)
                if limit is not None and emitted >= limit:
                    return
                current = []
            current.append(tok)
        if current:
            yield current

    def counts(self) -> dict:
        if self._counts is None:
            self._counts = self._count()
        return dict(self._counts)

    def _count(self) -> dict:
        n_tok = len(self.ids)
        n_chars = len(self.text)
        n_bytes = len(self.text.encode("utf-8"))
        return {
            "characters": n_chars,      # Unicode code points, as Python's len()
            "bytes": n_bytes,           # UTF-8
            "tokens": n_tok,
            "distinct_tokens": len(set(self.ids)),
            "chars_per_token": round(n_chars / n_tok, 3) if n_tok else None,
            "bytes_per_token": round(n_bytes / n_tok, 3) if n_tok else None,
            "partial_tokens": sum(t.partial for t in self.tokens),
            "special_tokens": sum(t.special for t in self.tokens),
            "unknown_tokens": sum(t.unknown for t in self.tokens),
        }


# ---------------------------------------------------------------- bytes and characters

def is_partial(raw: bytes) -> bool:
    return any(kind == "bytes" for kind, _ in readable_parts(raw))


def check_unicode(text: str) -> None:
    """Raise ValueError for text that has no UTF-8 form (an unpaired UTF-16 surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start]
        raise ValueError(f"the text contains an unpaired surrogate U+{ord(bad):04X} at character "
                         f"{exc.start:,}: that is not valid Unicode text") from None


def _char_index(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Per byte offset 0..len: whether a character starts there (True at len), and the index
    of the character the byte belongs to (len maps to the number of characters)."""
    arr = np.frombuffer(data, dtype=np.uint8)
    starts = np.ones(len(arr) + 1, dtype=bool)
    starts[:-1] = (arr & 0xC0) != 0x80   # continuation bytes look like 10xxxxxx
    char_of = np.cumsum(starts) - 1
    return starts, char_of


# ---------------------------------------------------------------- lining tokens up with the text

def byte_level_pieces(text: str, ids: list[int], token_bytes: Callable[[int], bytes] | None = None,
                      *, raw_tokens: list[bytes] | None = None,
                      special_ids: Iterable[int] = ()) -> list[TokenPiece]:
    """Tokens of a byte-level tokenizer, whose token bytes concatenate to the text's UTF-8.

    Give either ``token_bytes(id)`` or the tokens' bytes directly (``raw_tokens``).
    """
    data = text.encode("utf-8")
    raws = raw_tokens if raw_tokens is not None else [token_bytes(i) for i in ids]
    if len(raws) != len(ids):
        raise ValueError(f"{len(ids)} ids but {len(raws)} token byte strings")
    if b"".join(raws) != data:
        raise ValueError("the tokens' bytes do not add up to the text: not a byte-level tokenization")
    if not raws:
        return []
    starts, char_of = _char_index(data)
    ends = np.cumsum([len(r) for r in raws])
    begins = ends - np.array([len(r) for r in raws])
    clean_start, clean_end = starts[begins], starts[ends]
    partial = ~(clean_start & clean_end)
    group = np.cumsum(clean_start) - 1            # a new group wherever a token starts a character
    char_start = char_of[begins]
    # Widen to whole characters: a partial token covers (part of) the character it ends in.
    char_end = char_of[ends] + ~clean_end
    specials = set(special_ids)
    return [TokenPiece(index, int(tid), raw, int(b0), int(b1), int(c0), int(c1), int(g), bool(p),
                       special=int(tid) in specials)
            for index, (tid, raw, b0, b1, c0, c1, g, p) in enumerate(
                zip(ids, raws, begins.tolist(), ends.tolist(), char_start.tolist(), char_end.tolist(),
                    group.tolist(), partial.tolist()))]


def word_level_pieces(text: str, words: list[str], ids: list[int],
                      special_words: Iterable[str] = (ENDOFTEXT,)) -> list[TokenPiece]:
    """Tokens of the book's simple tokenizer: ``words`` are the pieces it split the text into
    (``<|unk|>`` where the word was unknown); whitespace between them belongs to no token."""
    specials = set(special_words)
    pieces = []  # (char_start, piece) of each non-blank piece, in order
    offset = 0
    for part in SIMPLE_SPLIT.split(text):
        stripped = part.strip()
        if stripped:
            pieces.append((offset + part.index(stripped), stripped))
        offset += len(part)
    if len(pieces) != len(words) or len(words) != len(ids):
        raise ValueError("the tokenizer's words do not line up with the text's pieces")
    out = []
    byte_pos, char_pos = 0, 0
    for index, ((start, piece), word, tid) in enumerate(zip(pieces, words, ids)):
        byte_pos += len(text[char_pos:start].encode("utf-8"))
        raw = piece.encode("utf-8")
        out.append(TokenPiece(index, int(tid), raw, byte_pos, byte_pos + len(raw), start,
                              start + len(piece), index, False,
                              special=word in specials and piece == word,
                              unknown=word == UNK and piece != UNK))
        byte_pos += len(raw)
        char_pos = start + len(piece)
    return out


def special_literals(tokenizer) -> list[str]:
    """The special-token strings a tokenizer knows (``<|endoftext|>`` and friends)."""
    if isinstance(tokenizer, BPETokenizer):
        return sorted(tokenizer.encoding.special_tokens_set)
    if isinstance(tokenizer, SimpleTokenizerV1):
        return [s for s in (ENDOFTEXT, UNK) if s in tokenizer.str_to_int]
    return []


def tokenize(tokenizer, text: str, special: SpecialMode = "allow", name: str | None = None) -> Tokenization:
    """Encode ``text`` and line the tokens up with it.

    ``special`` says what a special-token literal typed in the text becomes:
    ``"allow"`` the special token (one id), ``"plain"`` ordinary text (BPE: several pieces;
    the word-level tokenizer: an unknown word), ``"refuse"`` raise ``SpecialTokenError``.
    """
    if special not in SPECIAL_MODES:
        raise ValueError(f"special must be one of {', '.join(SPECIAL_MODES)}, got {special!r}")
    check_unicode(text)
    name = name or getattr(tokenizer, "name", type(tokenizer).__name__)
    literals = [s for s in special_literals(tokenizer) if s in text]
    notes = []
    if isinstance(tokenizer, BPETokenizer):
        if special == "refuse":
            ids = tokenizer.encode(text, allow_special=False)
        elif special == "plain":
            ids = tokenizer.encode_ordinary(text)
        else:
            ids = tokenizer.encode(text, allow_special=True)
        special_ids = set(tokenizer.encoding._special_tokens.values()) if special == "allow" else set()
        tokens = byte_level_pieces(text, ids, tokenizer.token_bytes, special_ids=special_ids)
        if ENDOFTEXT in text and ENDOFTEXT not in literals:
            notes.append(f"{name} has no {ENDOFTEXT} token: the literal is ordinary text.")
    elif isinstance(tokenizer, SimpleTokenizerV1):
        if special == "refuse" and literals:
            raise SpecialTokenError(f"the text contains the special token {literals[0]!r}")
        words = tokenizer.tokenize(text)
        if special == "plain":
            # A word-level vocabulary has no pieces to spell a literal with: it is unknown.
            unk = UNK if UNK in tokenizer.str_to_int else None
            words = [unk if (w in literals and unk) else w for w in words]
        if any(w not in tokenizer.str_to_int for w in words):
            tokenizer.encode(text)  # V1 has no <|unk|>: let it raise its own KeyError
        ids = [tokenizer.str_to_int[w] for w in words]
        tokens = word_level_pieces(text, words, ids, special_words=literals if special == "allow" else ())
    else:
        raise TypeError(f"cannot show tokens of a {type(tokenizer).__name__}")
    tz = Tokenization(text=text, tokenizer=name, ids=list(ids), tokens=tokens,
                      decoded=tokenizer.decode(ids) if ids else "", special_mode=special, notes=notes)
    tz.notes += _reading_notes(tz, tokenizer, literals)
    return tz


def _reading_notes(tz: Tokenization, tokenizer, literals: list[str]) -> list[str]:
    """What a reader should know about this tokenization (shown above the tokens)."""
    c = tz.counts()
    notes = []
    literals = [s for s in literals if s != UNK]
    word_level = isinstance(tokenizer, SimpleTokenizerV2)
    if literals and tz.special_mode == "allow":
        ids = sorted({t.id for t in tz.tokens if t.special})
        notes.append(f"{', '.join(literals)} typed in the text became the special token (id {', '.join(map(str, ids))}): "
                     "allowed, as when a data loader joins documents.")
    elif literals and tz.special_mode == "plain":
        how = "an unknown word, <|unk|>" if word_level else "ordinary text, several tokens; no special id was used"
        notes.append(f"{', '.join(literals)} was encoded as {how}. Choose 'special token' to get the single id.")
    if c["partial_tokens"]:
        notes.append(f"{c['partial_tokens']} tokens hold only part of a character's UTF-8 bytes (shown as "
                     "<0xE6>…); the underlined groups show the character they make together.")
    if c["unknown_tokens"]:
        words = sorted({t.raw.decode("utf-8") for t in tz.tokens if t.unknown})
        shown = ", ".join(words[:12]) + (" …" if len(words) > 12 else "")
        notes.append(f"{c['unknown_tokens']} words are not in the vocabulary and became {UNK} "
                     f"(id {tokenizer.str_to_int[UNK]}): {shown}. Byte-level BPE never needs {UNK}.")
    if word_level:
        notes.append("Word-level: whitespace (greyed) belongs to no token, so decoding cannot restore it exactly.")
    return notes


def first_difference(a: str, b: str) -> int | None:
    """Index of the first character where ``a`` and ``b`` differ (None when equal)."""
    if a == b:
        return None
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def gpt2_form(raw: bytes) -> str:
    """A token written as GPT-2's vocab.json does (byte by byte through ``gpt2_byte_chars``)."""
    table = gpt2_byte_chars()
    return "".join(table[b] for b in raw)


__all__ = [
    "TokenPiece", "Tokenization", "tokenize", "byte_level_pieces", "word_level_pieces",
    "is_partial", "check_unicode", "first_difference",
    "gpt2_form", "gpt2_byte_chars",
    "special_literals", "SPECIAL_MODES",
]
