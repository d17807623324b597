"""How every view shows a token or a stretch of text: one set of marks for whitespace
(␣ space, ↵ newline, ⇥ tab, ␍ carriage return), invisible characters as ⟨U+200D⟩, and bytes that
are only part of a character as <0xE6> (never as the replacement character U+FFFD)."""
from __future__ import annotations

import unicodedata
from typing import Literal

WHITESPACE_MARKS = {" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"}

Whitespace = Literal["typed", "marked"]


def readable_parts(raw: bytes) -> list[tuple[str, str | bytes]]:
    """Split ``raw`` into ("text", str) runs of whole UTF-8 characters and ("bytes", bytes)
    runs that are not (a character cut by a token boundary, or invalid UTF-8)."""
    parts: list[tuple[str, str | bytes]] = []
    i = 0
    while i < len(raw):
        try:
            parts.append(("text", raw[i:].decode("utf-8")))
            break
        except UnicodeDecodeError as exc:
            if exc.start:
                parts.append(("text", raw[i:i + exc.start].decode("utf-8")))
            parts.append(("bytes", raw[i + exc.start:i + exc.end]))
            i += exc.end
    # Merge neighbouring byte runs (several broken sequences in a row read as one run).
    merged: list[tuple[str, str | bytes]] = []
    for kind, value in parts:
        if merged and kind == "bytes" and merged[-1][0] == "bytes":
            merged[-1] = ("bytes", merged[-1][1] + value)
        elif value:
            merged.append((kind, value))
    return merged


def hex_bytes(raw: bytes) -> str:
    return "".join(f"<0x{b:02X}>" for b in raw)


def readable(raw: bytes) -> str:
    """Bytes as a string, never with U+FFFD: partial characters become <0xE6>."""
    return "".join(v if k == "text" else hex_bytes(v) for k, v in readable_parts(raw))


def invisible(ch: str) -> bool:
    """Characters that would be invisible or would rearrange the page if shown raw:
    control characters, zero-width joiners, bidirectional overrides, line separators."""
    return unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Co", "Cn", "Cs") and ch not in "\n\t"


def show_text(s: str, whitespace: Whitespace = "marked", line_breaks: bool = False) -> str:
    """Text as a view shows it. ``marked`` writes whitespace as ␣ ↵ ⇥ ␍ (``line_breaks`` keeps a
    real line break after each ↵, for running text); ``typed`` keeps it as typed. Invisible
    characters always show as ⟨U+200D⟩."""
    out = []
    for ch in s:
        if whitespace == "marked" and ch in WHITESPACE_MARKS:
            out.append(WHITESPACE_MARKS[ch] + ("\n" if ch == "\n" and line_breaks else ""))
        elif ch == "\r" or invisible(ch):
            out.append(f"⟨U+{ord(ch):04X}⟩")
        else:
            out.append(ch)
    return "".join(out)


def token_label(tokenizer, token_id: int) -> str:
    """One token as a label (axes, tables, hover): its bytes made readable, whitespace marked;
    ``#id`` for an id the tokenizer cannot name (a padded vocabulary row) or an empty token."""
    try:
        raw = tokenizer.token_bytes(int(token_id))
    except Exception:  # ids the tokenizer cannot decode (padding rows)
        return f"#{int(token_id)}"
    return show_text(readable(raw)) or f"#{int(token_id)}"


def ids_text(tokenizer, ids) -> str:
    """Several tokens' text joined as one, whitespace marked: a character split over two tokens
    shows whole, bytes that do not (yet) form one as <0xE6>."""
    return show_text(readable(b"".join(tokenizer.token_bytes(int(i)) for i in ids)))
