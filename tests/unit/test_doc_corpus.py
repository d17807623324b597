"""The documentation corpus extractor, on a small fake installation made here."""
from __future__ import annotations

import importlib.metadata as metadata
from pathlib import Path

import pytest

from llm_core import doc_corpus as dc

PROSE = ("The frobnicate function turns every widget in the list into a gadget, keeping the "
         "order of the input and returning a new list rather than changing the old one.")
SECOND = ("Widgets that are already gadgets are left alone, so calling the function twice gives "
          "the same answer as calling it once, which makes it safe to use in a retry loop.")
LICENCE = ("Permission is hereby granted, free of charge, to any person obtaining a copy of this "
           "software and associated documentation files, to deal in the Software without restriction.")
CODE = "    x = {'a': [1, 2, 3]}\n    y = f(x)[0] + g(x)['a']\n    z = (y == x) | (y != x)"
DOCTEST = "    >>> frobnicate([1, 2])\n    [gadget(1), gadget(2)]"


def _dist(root: Path, name: str, licence: str, files: dict[str, str]) -> None:
    info = root / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n"
                                   f"License-Expression: {licence}\n")
    record = []
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        record.append(f"{rel},,")
    record.append(f"{info.name}/METADATA,,")
    (info / "RECORD").write_text("\n".join(record) + "\n")


@pytest.fixture
def fake_install(tmp_path):
    site = tmp_path / "site"
    module = f'"""{PROSE}\n\n{SECOND}\n\n{LICENCE}"""\n\ndef frob(items):\n    """{SECOND}\n\n{DOCTEST}\n    """\n'
    _dist(site, "widgets", "MIT", {
        "widgets/__init__.py": module,
        "widgets/_private.py": f'"""{PROSE} private"""\n',
        "widgets/docs/guide.md": f"# Widgets\n\n{PROSE.upper()}\n\n{CODE}\n\nA third paragraph, long "
                             "enough to count as prose, says what a gadget is and why it matters.\n",
        "widgets/LICENSE.txt": LICENCE,
    })
    _dist(site, "copyleft", "GPL-3.0-or-later", {"copyleft/__init__.py": f'"""{PROSE} gpl"""\n'})
    docs = tmp_path / "python-docs"
    (docs / "library").mkdir(parents=True)
    (docs / "library" / "frob.rst.txt").write_text(
        ".. _frob-label:\n\n:mod:`frob` --- Frobnication\n============================\n\n"
        ".. index:: single: frob\n\n"
        f"Use :func:`frobnicate` with a :class:`list <list>` of widgets. {SECOND}\n\n"
        "Another paragraph of real prose about widgets, gadgets and the functions that turn one "
        "into the other, written so the document is long enough to keep.\n\n"
        f"Example::\n\n{DOCTEST}\n\n.. code-block:: python\n\n    import frob\n    frob.go()\n")
    (docs / "license.rst.txt").write_text(LICENCE * 3)
    return site, docs


def _build(fake_install):
    site, docs = fake_install
    return dc.build_doc_corpus(python_docs=docs, dists=list(metadata.distributions(path=[str(site)])),
                               include_pydoc=False)


def test_rst_markup_becomes_plain_text():
    text = dc.rst_to_text(".. _x:\n\nTitle\n=====\n\nSee :func:`len` and :ref:`the guide <guide>` or "
                          "``code`` with *emphasis*::\n\n   >>> len('ab')\n   2\n\n.. toctree::\n   a\n   b\n")
    assert text.split() == ["Title", "See", "len", "and", "the", "guide", "or", "code", "with",
                            "emphasis:", ">>>", "len('ab')", "2"]


def test_extraction_is_deterministic(fake_install):
    a, b = _build(fake_install), _build(fake_install)
    assert a.text() == b.text() and a.text().count(PROSE) == 1


def test_licence_filter_and_boilerplate(fake_install):
    corpus = _build(fake_install)
    names = [d.name for d in corpus.documents]
    assert "copyleft" in corpus.excluded and "GPL" in corpus.excluded["copyleft"]
    assert not any(n.startswith("copyleft:") for n in names)
    assert "Permission is hereby granted" not in corpus.text()  # licence paragraphs and files dropped
    assert not any("LICENSE" in n or n == "license" for n in names)
    assert {d.licence for d in corpus.documents} == {"MIT", "PSF-2.0"}
    assert corpus.dropped["licence"] >= 1


def test_exact_and_near_duplicates_dropped(fake_install):
    corpus = _build(fake_install)
    text = corpus.text()
    assert text.count(PROSE) == 1               # module docstring kept
    assert PROSE.upper() not in text            # same paragraph in capitals: a near duplicate
    # standalone in the module and the function docstring (the second copy dropped), and inside a
    # longer paragraph of the docs (a different paragraph, kept)
    assert text.count(SECOND) == 2 and "widgets.frob(items)\n\n>>>" in text
    assert corpus.dropped["duplicate"] >= 2


def test_code_only_dropped_examples_kept(fake_install):
    text = _build(fake_install).text()
    assert "y = f(x)[0]" not in text and "import frob" not in text
    assert ">>> frobnicate([1, 2])" in text
    assert "private" not in text                # private modules are internals
    assert "Use frobnicate with a list of widgets." in text


def test_held_out_split_is_by_document(fake_install):
    corpus = _build(fake_install)
    train, val = corpus.text("train"), corpus.text("val")
    for d in corpus.documents:
        assert (d.text in val) == d.held_out and (d.text in train) != d.held_out
    # the split is a property of the name, not of the order or the other documents
    assert dc.Document("packages", "x:y.py", "MIT", "a").held_out == dc.Document("packages", "x:y.py", "MIT", "b").held_out


def test_report_lists_sources_licences_and_exclusions(fake_install):
    rep = dc.report(_build(fake_install))
    assert "| python-docs | 1 |" in rep and "| packages |" in rep
    assert "copyleft" in rep and "MIT" in rep


@pytest.mark.parametrize("licence,ok", [("MIT", True), ("BSD-3-Clause", True), ("Apache 2.0 License", True),
                                        ("MPL-2.0 AND MIT", False), ("GPL-2.0", False), ("", False),
                                        ("LGPL-3.0", False), ("PSF-2.0", True)])
def test_licence_is_permissive(licence, ok):
    assert dc.licence_is_permissive(licence) is ok
