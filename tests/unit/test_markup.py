"""The one module that puts user, file, model and token text into the page literally."""
import html

from tabs.markup import html_text, md_code, md_text, plot_text

HOSTILE = '<img src=x onerror="alert(1)"> **bold** _it_ [link](http://x) `c` | $x$ # ~s~ !'


def test_html_text_escapes_markup_and_quotes():
    out = html_text(HOSTILE)
    assert "<" not in out and '"' not in out and html.unescape(out) == HOSTILE


def test_md_text_leaves_nothing_markdown_or_html_would_interpret():
    out = md_text(HOSTILE)
    assert not any(ch in out for ch in "<>*_[]`|$~!") and html.unescape(out) == HOSTILE
    assert md_code("a|b").startswith("<code>") and html.unescape(md_code("a|b")) == "<code>a|b</code>"


def test_plot_text_escapes_tags_but_not_quotes():
    out = plot_text('<b>"x"</b> & $y$')
    assert "<" not in out and '"x"' in out and html.unescape(out) == '<b>"x"</b> & $y$'
