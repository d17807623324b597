"""Default examples that suit the active tokenizer.

A teaching example reads best when its words are whole tokens: "cat" is one token of
GPT-2 but two (" c" + "at") of the shipped 4,096-token BPE, so each view keeps a few
candidates and shows the one whose words this tokenizer keeps whole.
"""
from __future__ import annotations

import re

_WORD = re.compile(r"[A-Za-z]+")


def whole_word_share(tokenizer, text: str) -> float:
    """The share of the text's words (with their leading space) that are one token each."""
    words = [("" if m.start() == 0 or text[m.start() - 1] != " " else " ") + m.group() for m in _WORD.finditer(text)]
    if not words:
        return 0.0
    return sum(len(tokenizer.encode(w)) == 1 for w in words) / len(words)


def pick_example(tokenizer, candidates: list[str]) -> str:
    """The first candidate with the highest share of whole-token words."""
    return max(candidates, key=lambda c: (whole_word_share(tokenizer, c), -candidates.index(c)))


def single_token_words(tokenizer, words: list[str], k: int | None = None, space: bool = True) -> list[str]:
    """The words (in order) that this tokenizer encodes as one token (with a leading space if ``space``)."""
    out = [w for w in words if len(tokenizer.encode((" " if space else "") + w)) == 1]
    return out[:k] if k is not None else out
