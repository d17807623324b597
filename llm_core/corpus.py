"""Text to train on: a corpus built from this Python's own documentation, uploads, The Verdict.

The built-in corpus is generated, not copied: the ``pydoc_data`` topics (the text behind
``help("if")``) plus the docstrings of the standard library, read from the source files
with ``ast`` so nothing is imported or executed. The same Python gives the same corpus,
byte for byte, so it is cached on disk keyed by the Python version.
"""
from __future__ import annotations

import ast
import hashlib
import os
import sys
import sysconfig
import threading
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from .files import write_atomic
from .paths import explorer_home
from .tokenizers import ENDOFTEXT

DOC_SEPARATOR = "\n" + ENDOFTEXT + "\n"
# Bump when the extraction changes, so stale caches are not reused.
EXTRACTOR_VERSION = 1

CACHE_DIR = explorer_home() / "corpora"

# Top-level stdlib names that are tests, demos, GUI code or jokes rather than documentation.
SKIP_TOP_LEVEL = {
    "test", "tests", "idlelib", "tkinter", "turtledemo", "turtle", "lib2to3", "ensurepip",
    "antigravity", "this", "site-packages", "dist-packages", "venv", "pydoc_data", "config",
    "__phello__", "__hello__",
}

VERDICT_URL = ("https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/"
               "ch02/01_main-chapter-code/the-verdict.txt")
VERDICT_CHARS = 20_479  # the book's length check for the download
DEFAULT_UPLOAD_MAX_BYTES = 5_000_000


class CorpusError(ValueError):
    """Text that cannot be used for training (the message says why and what to do)."""


# ---------------------------------------------------------------- extraction

def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _is_public(name: str) -> bool:
    return not name.startswith("_")


def public_module_files(root: Path) -> list[tuple[str, Path]]:
    """(dotted name, source file) for every public, non-test stdlib module, sorted."""
    out = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        parts = list(rel.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if not parts or parts[0] in SKIP_TOP_LEVEL:
            continue
        if any(not _is_public(p) or p.startswith("test") or p in ("tests", "idle_test") for p in parts):
            continue
        if any("-" in p or "." in p for p in parts):  # not importable names (e.g. site-packages)
            continue
        out.append((".".join(parts), path))
    out.sort()
    return out


def _signature(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    args = [a.arg for a in node.args.posonlyargs + node.args.args if a.arg not in ("self", "cls")]
    if node.args.vararg:
        args.append("*" + node.args.vararg.arg)
    args += [a.arg for a in node.args.kwonlyargs]
    if node.args.kwarg:
        args.append("**" + node.args.kwarg.arg)
    return f"{node.name}({', '.join(args)})"


def _function_section(node: ast.AST, prefix: str) -> str | None:
    """A public function's or method's signature and docstring (None for anything else)."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _is_public(node.name):
        doc = ast.get_docstring(node)
        return f"{prefix}{_signature(node)}\n\n{doc}" if doc else None
    return None


def module_document(name: str, source: str) -> str | None:
    """One document: the module's docstring, then its public classes and functions."""
    sections = module_sections(name, source)
    return "\n\n".join(sections) if sections else None


def module_sections(name: str, source: str) -> list[str]:
    """The module's docstring, each public class's and each public function's or method's
    signature with its docstring: one text each, in source order (none for invalid source)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    sections = []
    doc = ast.get_docstring(tree)
    if doc:
        sections.append(f"Module {name}\n\n{doc}")
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and _is_public(node.name):
            d = ast.get_docstring(node)
            if d:
                sections.append(f"class {name}.{node.name}\n\n{d}")
            methods = (_function_section(item, f"{name}.{node.name}.") for item in node.body)
            sections += [m for m in methods if m]
        elif section := _function_section(node, f"{name}."):
            sections.append(section)
    return sections


def topic_documents() -> list[str]:
    """The pydoc topics (``help('if')`` and friends), sorted by topic name."""
    from pydoc_data.topics import topics

    return [f"Topic {key}\n\n{topics[key].strip()}" for key in sorted(topics) if topics[key].strip()]


def stdlib_documents(root: Path | None = None) -> list[str]:
    docs = []
    for name, path in public_module_files(root or stdlib_dir()):
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        doc = module_document(name, source)
        if doc:
            docs.append(doc)
    return docs


def build_pydoc_corpus() -> str:
    """Topics then module docstrings, joined by ``<|endoftext|>`` (deterministic)."""
    docs = topic_documents() + stdlib_documents()
    # A literal separator inside a docstring would split a document in two.
    docs = [d.replace(ENDOFTEXT, "<endoftext>") for d in docs]
    return DOC_SEPARATOR.join(docs) + "\n"


def _cache_file() -> Path:
    impl = f"{sys.implementation.name}-{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
    return CACHE_DIR / f"pydoc-{impl}-v{EXTRACTOR_VERSION}.txt"


def pydoc_corpus(use_cache: bool = True) -> str:
    """The built-in corpus, built once per Python version and cached on disk."""
    cache = _cache_file()
    if use_cache and cache.is_file():
        try:
            return cache.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            pass
    text = build_pydoc_corpus()
    if use_cache:
        try:
            write_atomic(cache, text.encode("utf-8"))
        except OSError:
            pass  # a read-only home still gets the corpus, just rebuilt next time
    return text


# ---------------------------------------------------------------- statistics and splitting

@dataclass(frozen=True)
class CorpusStats:
    name: str
    characters: int
    documents: int
    tokens: int | None = None
    tokenizer: str | None = None
    sha256: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        toks = f", {self.tokens:,} tokens ({self.tokenizer})" if self.tokens is not None else ""
        return f"{self.name}: {self.characters:,} characters, {self.documents:,} documents{toks}"


def corpus_stats(text: str, tokenizer=None, name: str = "corpus") -> CorpusStats:
    """Size in characters, documents and (given a tokenizer) tokens."""
    tokens = len(tokenizer.encode(text)) if tokenizer is not None else None
    return CorpusStats(name=name, characters=len(text), documents=text.count(ENDOFTEXT) + 1,
                       tokens=tokens, tokenizer=getattr(tokenizer, "name", None) if tokenizer else None,
                       sha256=hashlib.sha256(text.encode("utf-8")).hexdigest())


def train_val_split(text: str, ratio: float = 0.9) -> tuple[str, str]:
    """The book's split: the first ``ratio`` of the characters train, the rest validate."""
    if not 0.0 < ratio < 1.0:
        raise CorpusError(f"train ratio must be between 0 and 1 (got {ratio})")
    split_idx = int(ratio * len(text))
    return text[:split_idx], text[split_idx:]


# ---------------------------------------------------------------- uploads

def load_text_upload(path_or_bytes: str | os.PathLike | bytes, max_bytes: int = DEFAULT_UPLOAD_MAX_BYTES) -> str:
    """Read an uploaded text file: size-limited, UTF-8 only, no binary."""
    if isinstance(path_or_bytes, (bytes, bytearray)):
        data = bytes(path_or_bytes)
        if len(data) > max_bytes:
            raise CorpusError(f"the text is {len(data):,} bytes; the limit is {max_bytes:,} bytes. "
                              "Upload a shorter file.")
    else:
        path = Path(path_or_bytes)
        if not path.is_file():
            raise CorpusError(f"{path.name} is not a readable file")
        size = path.stat().st_size
        if size > max_bytes:
            raise CorpusError(f"{path.name} is {size:,} bytes; the limit is {max_bytes:,} bytes. "
                              "Upload a shorter file.")
        data = path.read_bytes()
    if b"\x00" in data:
        raise CorpusError("the file looks binary (it contains NUL bytes); upload a plain UTF-8 .txt file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CorpusError(f"the file is not valid UTF-8 (bad byte at position {exc.start}); "
                          "save it as UTF-8 text and upload again") from None
    if not text.strip():
        raise CorpusError("the file is empty (or only whitespace); upload some text")
    return text


# ---------------------------------------------------------------- The Verdict (online only)

@dataclass(frozen=True)
class BookText:
    text: str | None
    reason: str = ""  # why it is unavailable, when text is None

    @property
    def available(self) -> bool:
        return self.text is not None


def _verdict_cache() -> Path:
    return CACHE_DIR / "the-verdict.txt"


def _verdict_ok(text: str) -> bool:
    return len(text) == VERDICT_CHARS and text.startswith("I HAD always thought Jack Gisburn")


def the_verdict(timeout: float = 8.0, url: str = VERDICT_URL) -> BookText:
    """The book's short story, from the cache or its published URL; never waits past ``timeout``."""
    cache = _verdict_cache()
    if cache.is_file():
        try:
            text = cache.read_text(encoding="utf-8")
            if _verdict_ok(text):
                return BookText(text)
        except (OSError, UnicodeDecodeError):
            pass
    if os.environ.get("HF_HUB_OFFLINE") == "1" and os.environ.get("LLM_EXPLORER_ALLOW_DOWNLOADS") != "1":
        return BookText(None, "The Verdict is not cached and downloads are switched off (offline mode).")
    result: dict = {}

    def fetch():  # in a thread: DNS lookups ignore urlopen's timeout
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                result["data"] = resp.read(200_000)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            result["error"] = getattr(exc, "reason", exc)

    worker = threading.Thread(target=fetch, daemon=True)
    worker.start()
    worker.join(timeout + 1.0)
    if "data" not in result:
        reason = result.get("error", f"no answer within {timeout:.0f} s")
        return BookText(None, f"The Verdict is unavailable: could not download it ({reason}). "
                              "Use the built-in corpus or upload a .txt file.")
    data = result["data"]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return BookText(None, "The Verdict is unavailable: the download was not UTF-8 text.")
    if not _verdict_ok(text):
        return BookText(None, f"The Verdict is unavailable: the download has {len(text):,} characters, "
                              f"not the book's {VERDICT_CHARS:,}.")
    try:
        write_atomic(cache, data)
    except OSError:
        pass
    return BookText(text)
