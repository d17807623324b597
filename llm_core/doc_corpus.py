"""A larger built-in corpus: the documentation the machine's own installed software ships.

Three sources, each read from disk, never downloaded:

- ``python-docs``: Python's documentation sources where Debian's ``python3-doc`` package is
  installed (``/usr/share/doc/python3.X/html/_sources/**/*.rst.txt``), reST markup turned into
  plain text.
- ``packages``: every installed distribution whose licence is permissive: its modules'
  docstrings (read with ``ast``, nothing imported) and its ``.md``/``.rst``/``.txt`` documents.
- ``pydoc``: the pydoc topics and the standard library's docstrings (as in :mod:`llm_core.corpus`).

Paragraphs that are code only, licence boilerplate, or (near-)duplicates of an earlier paragraph
are dropped. Every document keeps its source, name and licence, and a fixed hash of its name puts
it in the training or the held-out split, so the split is by document, not by window, and the
same environment gives the same corpus byte for byte.

    python -m llm_core.doc_corpus --report          # characters, tokens and licences per source
    python -m llm_core.doc_corpus --out corpus.txt  # write the training text
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.metadata as metadata
import re
import sys
import sysconfig
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .corpus import CACHE_DIR, DOC_SEPARATOR, module_document, public_module_files, stdlib_dir, topic_documents
from .files import write_atomic
from .tokenizers import ENDOFTEXT

# Licences whose text may be trained on and shipped as weights without conditions beyond notice.
PERMISSIVE = ("mit", "bsd", "apache", "isc", "psf", "python software foundation", "zlib", "0bsd",
              "unlicense", "cnri-python", "hpnd", "mit-cmu")
# Markers of a licence that is not (only) permissive: such a distribution is left out.
NOT_PERMISSIVE = ("gpl", "mpl", "mozilla", "epl", "eclipse", "cddl", "proprietary", "commercial")

VALIDATION_PERCENT = 5  # documents whose name hashes below this go to the held-out split

# Files that are metadata or legal text, not documentation.
SKIP_FILE = re.compile(r"(^|/)(licen[cs]e|copying|notice|authors|contributors|patents|record|"
                       r"entry_points|top_level|requested|installer|wheel|metadata|sbom|"
                       r"dependency_links|requires|namespace_packages|zip-safe)[^/]*$", re.I)
DOC_SUFFIXES = (".md", ".rst", ".txt")
MAX_FILE_BYTES = 2_000_000  # larger text files are data, not prose

LICENCE_PHRASES = re.compile(
    r"permission is hereby granted|the software is provided \"?as is|licensed under the apache|"
    r"redistribution and use in source and binary|spdx-license-identifier|all rights reserved|"
    r"gnu general public license|warranties of merchantability|copyright \(c\)|^copyright \d{4}",
    re.I | re.M)

# Python documentation files that are lists, changelogs or legal text rather than prose.
SKIP_PYTHON_DOCS = {"license.rst.txt", "copyright.rst.txt", "whatsnew/changelog.rst.txt",
                    "bugs.rst.txt", "about.rst.txt", "contents.rst.txt", "glossary.rst.txt"}


@dataclass(frozen=True)
class Document:
    source: str    # python-docs | packages | pydoc
    name: str      # e.g. "tutorial/controlflow" or "numpy:numpy.linalg"
    licence: str
    text: str

    @property
    def held_out(self) -> bool:
        return is_held_out(self.source, self.name)


def is_held_out(source: str, name: str) -> bool:
    """Whether the document of this source and name belongs to the held-out split (a fixed hash)."""
    digest = hashlib.sha256(f"{source}:{name}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 100 < VALIDATION_PERCENT


@dataclass
class DocCorpus:
    documents: list[Document]
    excluded: dict[str, str] = field(default_factory=dict)  # distribution -> why it was left out
    dropped: Counter = field(default_factory=Counter)        # reason -> paragraphs dropped

    def text(self, split: str = "all") -> str:
        docs = [d for d in self.documents
                if split == "all" or (split == "val") == d.held_out]
        return DOC_SEPARATOR.join(d.text for d in docs) + "\n"

    def by_source(self) -> dict[str, list[Document]]:
        out: dict[str, list[Document]] = {}
        for d in self.documents:
            out.setdefault(d.source, []).append(d)
        return out


# ---------------------------------------------------------------- reST to text

_ROLE = re.compile(r":[\w:.+-]+:`([^`]*)`")
_REF_TARGET = re.compile(r"^(.*?)\s*<[^<>]+>$", re.S)
_HEADING_LINE = re.compile(r"^([=\-~^\"'`#*+_:.])\1{2,}\s*$")
_DIRECTIVE = re.compile(r"^\s*\.\.\s+([\w:-]+)::\s*(.*)$")
# Directives whose body is prose worth keeping; the rest (index, toctree, code, images...) go.
_KEEP_DIRECTIVES = {"note", "warning", "seealso", "tip", "important", "versionadded",
                    "versionchanged", "deprecated", "function", "method", "class", "attribute",
                    "data", "exception", "module", "describe", "decorator", "opcode", "cmdoption",
                    "envvar", "option", "impl-detail", "admonition", "staticmethod", "classmethod",
                    "attention", "caution", "hint"}


def _role_text(match: re.Match) -> str:
    inner = match.group(1).lstrip("!~")
    target = _REF_TARGET.match(inner)
    return target.group(1) if target else inner


def rst_to_text(source: str) -> str:
    """Plain text from reST: roles unwrapped, headings kept as lines, directives' markup gone."""
    out: list[str] = []
    skip_indent: int | None = None  # inside a dropped directive's indented body
    for raw in source.splitlines():
        line = raw.rstrip()
        indent = len(line) - len(line.lstrip())
        if skip_indent is not None:
            if not line or indent > skip_indent:
                continue
            skip_indent = None
        if _HEADING_LINE.match(line):
            continue  # over/underline of a heading: the heading text is the line beside it
        m = _DIRECTIVE.match(line)
        if m:
            name, arg = m.group(1).lower(), m.group(2).strip()
            if name in _KEEP_DIRECTIVES:
                if arg:
                    out.append(" " * indent + _ROLE.sub(_role_text, arg))
            else:
                skip_indent = indent
            continue
        if re.match(r"^\s*\.\.(\s|$)", line):  # comment or label (.. _name:)
            skip_indent = indent
            continue
        if line.lstrip().startswith(":") and re.match(r"^\s*:[\w -]+:(\s|$)", line) and indent > 0:
            continue  # directive options such as :noindex:
        line = _ROLE.sub(_role_text, line)
        line = line.replace("``", "").replace("**", "")
        line = re.sub(r"(?<![\w*])\*([^*\s][^*]*?)\*(?![\w*])", r"\1", line)  # *emphasis*
        line = re.sub(r"`([^`<]+?)(?:\s*<[^>]+>)?`_{0,2}", r"\1", line)
        line = re.sub(r"(?<=\S)::$", ":", line)
        if line.strip() == "::":
            continue
        out.append(line)
    return "\n".join(out)


# ---------------------------------------------------------------- paragraph filters

def _paragraphs(text: str) -> list[str]:
    return [p.strip("\n") for p in re.split(r"\n\s*\n", text) if p.strip()]


def is_code_only(paragraph: str) -> bool:
    """True for a block that is code with no prose; doctest examples (>>>) count as examples."""
    lines = [ln for ln in paragraph.splitlines() if ln.strip()]
    if any(ln.lstrip().startswith(">>>") for ln in lines):
        return False
    words = re.findall(r"\b[A-Za-z]{2,}\b", paragraph)
    symbols = len(re.findall(r"[{}()\[\];=<>_#$\\|&]", paragraph))
    if not words:
        return True
    if all(ln.startswith((" ", "\t")) for ln in lines) and symbols >= len(words) * 0.5:
        return True  # an indented literal block
    return symbols > len(words) * 1.5


def is_licence_text(paragraph: str) -> bool:
    return bool(LICENCE_PHRASES.search(paragraph))


def _near_key(paragraph: str) -> str:
    """Paragraphs that differ only in case, punctuation, numbers or spacing share this key."""
    norm = re.sub(r"\d+", "0", paragraph.lower())
    norm = re.sub(r"[^a-z0]+", " ", norm).strip()
    return hashlib.sha1(norm.encode()).hexdigest()


def has_prose(text: str, min_paragraphs: int = 2, min_words: int = 12) -> bool:
    """At least a few paragraphs of real sentences (generated API stubs have none)."""
    return sum(len(re.findall(r"\b[A-Za-z]{2,}\b", p)) >= min_words
               for p in _paragraphs(text)) >= min_paragraphs


class ParagraphFilter:
    """Drops code-only, licence and duplicate paragraphs; remembers what it has seen."""

    MIN_DEDUP_CHARS = 60  # short lines ("Parameters", "Returns") repeat legitimately

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.dropped: Counter = Counter()

    def clean(self, text: str) -> str:
        kept = []
        for p in _paragraphs(text):
            if is_licence_text(p):
                self.dropped["licence"] += 1
                continue
            if is_code_only(p):
                self.dropped["code only"] += 1
                continue
            if len(p) >= self.MIN_DEDUP_CHARS:
                key = _near_key(p)
                if key in self.seen:
                    self.dropped["duplicate"] += 1
                    continue
                self.seen.add(key)
            kept.append(p)
        return "\n\n".join(kept).replace(ENDOFTEXT, "<endoftext>")


# ---------------------------------------------------------------- sources

def python_docs_root() -> Path | None:
    """Debian's python3-doc sources for this Python's minor version (or any installed one)."""
    v = f"{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [Path(f"/usr/share/doc/python{v}/html/_sources")]
    candidates += sorted(Path("/usr/share/doc").glob("python3.*/html/_sources"), reverse=True)
    return next((c for c in candidates if c.is_dir()), None)


def python_doc_documents(root: Path, filt: ParagraphFilter) -> list[Document]:
    docs = []
    for path in sorted(root.rglob("*.rst.txt")):
        rel = path.relative_to(root).as_posix()
        if rel in SKIP_PYTHON_DOCS:
            continue
        try:
            text = filt.clean(rst_to_text(path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError):
            continue
        if len(text) >= 200:
            docs.append(Document("python-docs", rel.removesuffix(".rst.txt"), "PSF-2.0", text))
    return docs


def distribution_licence(dist: metadata.Distribution) -> str:
    md = dist.metadata
    expr = (md.get("License-Expression") or "").strip()
    if expr:
        return expr
    classifiers = [c.split("::")[-1].strip() for c in (md.get_all("Classifier") or [])
                   if c.startswith("License ::") and "OSI Approved" != c.split("::")[-1].strip()]
    if classifiers:
        return " / ".join(classifiers)
    first = (md.get("License") or "").strip().splitlines()
    return first[0][:60] if first else ""


def licence_is_permissive(licence: str) -> bool:
    low = licence.lower()
    if not low or any(bad in low for bad in NOT_PERMISSIVE):
        return False
    return any(ok in low for ok in PERMISSIVE)


def _dist_name(dist: metadata.Distribution) -> str:
    return (dist.metadata.get("Name") or "").strip()


def package_documents(dists, filt: ParagraphFilter, excluded: dict[str, str]) -> list[Document]:
    """Docstrings and documentation files of every permissively licensed distribution."""
    docs = []
    for dist in sorted(dists, key=lambda d: _dist_name(d).lower()):
        name = _dist_name(dist)
        if not name or name in excluded:
            continue
        licence = distribution_licence(dist)
        if not licence_is_permissive(licence):
            excluded[name] = f"licence {licence or 'unknown'!r} is not on the permissive list"
            continue
        files = sorted((str(f) for f in (dist.files or [])))
        for rel in files:
            low = rel.lower()
            if "/tests/" in low or "/test/" in low or low.startswith(("test", "../")) or SKIP_FILE.search(rel):
                continue
            if not (low.endswith(".py") or low.endswith(DOC_SUFFIXES)):
                continue
            path = Path(dist.locate_file(rel))
            try:
                if not path.is_file() or path.stat().st_size > MAX_FILE_BYTES:
                    continue
                source = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            if low.endswith(".py"):
                module = rel[:-3].replace("/", ".").removesuffix(".__init__")
                if any(part.startswith("_") for part in module.split(".")):
                    continue  # private modules: internals and generated code, not documentation
                raw = module_document(module, source)
                raw = rst_to_text(raw) if raw else raw
            else:
                raw = rst_to_text(source) if low.endswith(".rst") else source
            if not raw:
                continue
            text = filt.clean(raw)
            if len(text) >= 200 and has_prose(text):
                docs.append(Document("packages", f"{name}:{rel}", licence, text))
    return docs


def build_doc_corpus(python_docs: Path | None = None, dists=None, include_pydoc: bool = True,
                     use_python_docs: bool = True) -> DocCorpus:
    """The whole corpus, deterministic for a given environment (sources in a fixed order)."""
    filt = ParagraphFilter()
    excluded: dict[str, str] = {}
    docs: list[Document] = []
    if include_pydoc:
        for t in topic_documents():
            cleaned = filt.clean(t)
            if cleaned:
                docs.append(Document("pydoc", cleaned.split("\n", 1)[0], "PSF-2.0", cleaned))
        for module, path in public_module_files(stdlib_dir()):
            try:
                raw = module_document(module, path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError):
                continue
            cleaned = filt.clean(raw) if raw else ""
            if len(cleaned) >= 200:
                docs.append(Document("pydoc", module, "PSF-2.0", cleaned))
    root = python_docs if python_docs is not None else (python_docs_root() if use_python_docs else None)
    if root is not None:
        docs += python_doc_documents(root, filt)
    docs += package_documents(metadata.distributions() if dists is None else dists, filt, excluded)
    return DocCorpus(docs, excluded, filt.dropped)


# ---------------------------------------------------------------- report

def report(corpus: DocCorpus, tokenizer=None) -> str:
    lines = ["| source | documents | characters | tokens | licences |", "|---|---:|---:|---:|---|"]
    total_chars = total_tokens = 0
    for source, docs in corpus.by_source().items():
        chars = sum(len(d.text) for d in docs)
        tokens = sum(len(tokenizer.encode(d.text)) for d in docs) if tokenizer else None
        licences = Counter(d.licence for d in docs)
        lic = ", ".join(f"{k} ({v})" for k, v in licences.most_common(8))
        lines.append(f"| {source} | {len(docs):,} | {chars:,} | "
                     f"{'' if tokens is None else f'{tokens:,}'} | {lic} |")
        total_chars += chars
        total_tokens += tokens or 0
    val = [d for d in corpus.documents if d.held_out]
    lines.append(f"| **all** | {len(corpus.documents):,} | {total_chars:,} | "
                 f"{f'{total_tokens:,}' if tokenizer else ''} | held out: {len(val):,} documents, "
                 f"{sum(len(d.text) for d in val):,} characters |")
    per_dist = Counter()
    for d in corpus.documents:
        if d.source == "packages":
            per_dist[d.name.split(":", 1)[0]] += len(d.text)
    if per_dist:
        lines.append("")
        lines.append("Largest distributions (characters): "
                     + ", ".join(f"{k} {v:,}" for k, v in per_dist.most_common(12)))
    lines.append("")
    lines.append("Dropped paragraphs: " + ", ".join(f"{k} {v:,}" for k, v in sorted(corpus.dropped.items())))
    if corpus.excluded:
        lines.append("Left out: " + "; ".join(f"{k} ({v})" for k, v in sorted(corpus.excluded.items())))
    return "\n".join(lines)


def environment_pins() -> list[str]:
    """name==version of every installed distribution: the environment the corpus came from."""
    pins = {f"{_dist_name(d)}=={d.version}" for d in metadata.distributions() if _dist_name(d)}
    return sorted(pins, key=str.lower) + [f"python=={sys.version.split()[0]} ({sysconfig.get_platform()})"]


EXTRACTOR_VERSION = 1  # bump when the extraction changes, so stale caches are not reused


def _environment_key() -> str:
    root = python_docs_root()
    stamp = "\n".join(environment_pins()) + f"\n{root}:{root and sum(1 for _ in root.rglob('*.rst.txt'))}"
    return hashlib.sha256(f"v{EXTRACTOR_VERSION}\n{stamp}".encode()).hexdigest()[:16]


def doc_corpus_texts(use_cache: bool = True) -> tuple[str, str]:
    """(training text, held-out text), built once per environment and cached on disk."""
    cache = CACHE_DIR / f"docs-{_environment_key()}"
    train_file, val_file = cache / "train.txt", cache / "val.txt"
    if use_cache and train_file.is_file() and val_file.is_file():
        try:
            return train_file.read_text(encoding="utf-8"), val_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            pass
    corpus = build_doc_corpus()
    train, val = corpus.text("train"), corpus.text("val")
    if use_cache:
        try:
            write_atomic(train_file, train.encode("utf-8"))
            write_atomic(val_file, val.encode("utf-8"))
        except OSError:
            pass
    return train, val


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m llm_core.doc_corpus", description=__doc__.split("\n\n")[0])
    p.add_argument("--report", action="store_true", help="print sizes and licences per source")
    p.add_argument("--tokens", action="store_true", help="count GPT-2 tokens in the report (slower)")
    p.add_argument("--out", help="write the corpus text (all documents) here")
    p.add_argument("--split", choices=["all", "train", "val"], default="all")
    p.add_argument("--pins", help="write the environment's package pins here")
    args = p.parse_args(argv)
    corpus = build_doc_corpus()
    if args.out:
        Path(args.out).write_text(corpus.text(args.split), encoding="utf-8")
    if args.pins:
        Path(args.pins).write_text("\n".join(environment_pins()) + "\n", encoding="utf-8")
    if args.report or not args.out:
        tok = None
        if args.tokens:
            from .tokenizers import get_tokenizer
            tok = get_tokenizer("gpt2")
        print(report(corpus, tok))
    return 0


if __name__ == "__main__":
    sys.exit(main())
