"""Text from users, files, models and tokenizers put into the page literally, one function per
place it goes: an HTML element or attribute, Markdown, or plotly's text (titles, hover, labels)."""
from __future__ import annotations

import html

# Characters that HTML or Markdown (Gradio's, with $…$ maths) would interpret.
_MD_SPECIAL = {ord(c): f"&#{ord(c)};" for c in "&<>\\`*_[]{}#|~!$"}


def html_text(text, quote: bool = True) -> str:
    """For gr.HTML: element text and attribute values (quotes too, unless ``quote=False``)."""
    return html.escape(str(text), quote=quote)


def md_text(text) -> str:
    """For gr.Markdown (also table cells): shown literally, never as HTML, formatting, links or
    maths. Numeric entities, which Markdown, HTML and plotly all decode."""
    return str(text).translate(_MD_SPECIAL)


def md_code(text) -> str:
    """Literal text in monospace inside Markdown (a ``<code>`` element: a backtick span would
    show entities as typed)."""
    return f"<code>{md_text(text)}</code>"


def plot_text(text) -> str:
    """For plotly titles, hover and cell labels: it renders a little HTML, so <, > and & are
    escaped, and $ (a $…$ label is LaTeX where MathJax is loaded); quotes are not, since plotly
    would show ``&quot;`` literally."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("$", "&#36;")
