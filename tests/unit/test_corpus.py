"""The built-in corpus (Python's own documentation), splitting, uploads and The Verdict offline."""
import textwrap

import pytest

from llm_core import corpus
from llm_core.corpus import CorpusError
from llm_core.tokenizers import ENDOFTEXT

SOURCE = textwrap.dedent('''
    """Tools for brewing tea.

    Longer description of the module."""

    import os

    def steep(leaves, *, minutes=3, **extra):
        """Steep the leaves for a while."""

    def _private_helper():
        """Never part of the corpus."""

    class Teapot:
        """A pot that holds tea."""

        def pour(self, cups):
            """Pour some cups."""

        def _clean(self):
            """Hidden."""

    class _Hidden:
        """Hidden class."""
''')


def test_module_document_keeps_public_docstrings_only():
    doc = corpus.module_document("teatime", SOURCE)
    assert doc.startswith("Module teatime\n\nTools for brewing tea.")
    assert "teatime.steep(leaves, minutes, **extra)\n\nSteep the leaves" in doc
    assert "class teatime.Teapot\n\nA pot that holds tea." in doc
    assert "teatime.Teapot.pour(cups)\n\nPour some cups." in doc
    assert "Never part" not in doc and "Hidden" not in doc


def test_module_document_without_docstrings_or_invalid_source():
    assert corpus.module_document("empty", "x = 1\n") is None
    assert corpus.module_document("broken", "def (:\n") is None


def test_stdlib_walk_skips_tests_private_and_gui_modules(tmp_path):
    files = {
        "alpha.py": '"""Alpha module."""',
        "_private.py": '"""Private."""',
        "test_alpha.py": '"""A test."""',
        "idlelib/editor.py": '"""IDLE."""',
        "pkg/__init__.py": '"""A package."""',
        "pkg/beta.py": '"""Beta module."""',
        "pkg/tests/test_beta.py": '"""Tests."""',
        "pkg/_impl.py": '"""Impl."""',
        "site-packages/thirdparty.py": '"""Not stdlib."""',
        "antigravity.py": '"""Opens a browser."""',
    }
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    names = [name for name, _ in corpus.public_module_files(tmp_path)]
    assert names == ["alpha", "pkg", "pkg.beta"]
    docs = corpus.stdlib_documents(tmp_path)
    assert docs == corpus.stdlib_documents(tmp_path)
    assert [d.splitlines()[0] for d in docs] == ["Module alpha", "Module pkg", "Module pkg.beta"]


@pytest.fixture(scope="module")
def pydoc_text():
    return corpus.pydoc_corpus()


def test_pydoc_corpus_is_built_cached_and_stable(pydoc_text):
    from pydoc_data.topics import topics

    assert corpus._cache_file().read_text(encoding="utf-8") == pydoc_text
    assert corpus.pydoc_corpus() == pydoc_text  # second call: from the cache
    docs = pydoc_text.split(corpus.DOC_SEPARATOR)
    n_topics = sum(1 for v in topics.values() if v.strip())
    assert all(d.startswith("Topic ") for d in docs[:n_topics])
    modules = [d.split("\n")[0] for d in docs[n_topics:] if d.startswith("Module ")]
    assert "Module json" in modules
    assert not any(m.startswith(("Module test", "Module idlelib", "Module tkinter")) for m in modules)
    assert len(pydoc_text) > 500_000


def test_corpus_stats_counts_documents_and_tokens(pydoc_text):
    from llm_core.tokenizers import gpt2_tokenizer

    sample = pydoc_text[:20_000]
    stats = corpus.corpus_stats(sample, gpt2_tokenizer(), name="sample")
    assert stats.characters == 20_000
    assert stats.documents == sample.count(ENDOFTEXT) + 1
    assert stats.tokens == len(gpt2_tokenizer().encode(sample))
    assert "20,000 characters" in stats.summary()
    assert corpus.corpus_stats("abc").tokens is None


def test_train_val_split_by_characters():
    text = "x" * 95 + "y" * 5
    train, val = corpus.train_val_split(text, 0.9)
    assert len(train) == 90 and len(val) == 10 and train + val == text
    train, val = corpus.train_val_split("abcdefghij")  # the book's default ratio
    assert (train, val) == ("abcdefghi", "j")
    for bad in (0, 1, 1.5, -0.1):
        with pytest.raises(CorpusError):
            corpus.train_val_split(text, bad)


def test_upload_accepts_utf8_and_strips_bom(tmp_path):
    assert corpus.load_text_upload("héllo wörld ✓".encode()) == "héllo wörld ✓"
    assert corpus.load_text_upload(b"\xef\xbb\xbfwith bom") == "with bom"
    path = tmp_path / "story.txt"
    path.write_text("Once upon a time.", encoding="utf-8")
    assert corpus.load_text_upload(path) == "Once upon a time."
    assert corpus.load_text_upload(str(path)) == "Once upon a time."


@pytest.mark.parametrize("data, words", [
    (b"", "empty"),
    (b"   \n\t ", "empty"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "binary"),
    (b"caf\xe9 latin-1", "UTF-8"),
    (b"x" * 101, "limit"),
])
def test_upload_rejects_bad_input_with_a_reason(data, words):
    with pytest.raises(CorpusError, match=words):
        corpus.load_text_upload(data, max_bytes=100)


def test_upload_rejects_missing_and_oversized_files(tmp_path):
    with pytest.raises(CorpusError, match="not a readable file"):
        corpus.load_text_upload(tmp_path / "missing.txt")
    big = tmp_path / "big.txt"
    big.write_text("a" * 2000)
    with pytest.raises(CorpusError, match="limit"):
        corpus.load_text_upload(big, max_bytes=1000)


def test_the_verdict_offline_says_why(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("LLM_EXPLORER_ALLOW_DOWNLOADS", raising=False)
    monkeypatch.setattr(corpus, "_verdict_cache", lambda: corpus.CACHE_DIR / "no-such-verdict.txt")
    book = corpus.the_verdict()
    assert not book.available and book.text is None
    assert "offline" in book.reason


def test_the_verdict_unreachable_url_is_unavailable(monkeypatch):
    monkeypatch.setenv("LLM_EXPLORER_ALLOW_DOWNLOADS", "1")
    monkeypatch.setattr(corpus, "_verdict_cache", lambda: corpus.CACHE_DIR / "no-such-verdict.txt")
    book = corpus.the_verdict(timeout=2, url="http://127.0.0.1:9/the-verdict.txt")
    assert not book.available
    assert "unavailable" in book.reason and book.text is None
