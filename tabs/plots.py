"""One shape for a plot that has nothing to show yet: a short note, never an empty axis."""
from __future__ import annotations

import plotly.graph_objects as go


def note_figure(text: str, height: int = 140) -> go.Figure:
    """A figure holding only ``text`` (no axes, no grid), for a plot before its first result.

    The background is transparent and the note has no colour of its own, so the page's theme
    (light or dark, see assets/style.css) shows through."""
    fig = go.Figure()
    fig.add_annotation(text=text, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, font_size=14)
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=10, b=10),
                      xaxis=dict(visible=False), yaxis=dict(visible=False),
                      paper_bgcolor="rgba(0,0,0,0)", plot_bgcolor="rgba(0,0,0,0)")
    return fig
