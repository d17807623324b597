"""Helpers for the figures several tabs draw."""
from __future__ import annotations

import math


def plot_text(text) -> str:
    """Text for plotly (titles, hover, cell labels): it renders a little HTML, so <, > and & are
    escaped; quotes are not, since plotly would show ``&quot;`` literally."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def token_ticks(labels: list[str], max_labels: int = 40, index: bool = False) -> tuple[list[int], list[str]]:
    """Tick positions 0..T-1 and their token texts for a heatmap axis.

    Heatmaps are drawn on positions, never on token strings: plotly's categorical axis
    merges equal labels, so a repeated token would lose its row. With many tokens every
    n-th is labelled; ``index`` appends the position (``·3``)."""
    step = max(1, math.ceil(len(labels) / max_labels))
    ticks = list(range(0, len(labels), step))
    return ticks, [plot_text(labels[i]) + (f" ·{i}" if index else "") for i in ticks]
