"""Helpers for the figures several tabs draw."""
from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go

from tabs.markup import plot_text


def token_ticks(labels: list[str], max_labels: int = 40, index: bool = False) -> tuple[list[int], list[str]]:
    """Tick positions 0..T-1 and their token texts for a heatmap axis.

    Heatmaps are drawn on positions, never on token strings: plotly's categorical axis
    merges equal labels, so a repeated token would lose its row. With many tokens every
    n-th is labelled; ``index`` appends the position (``·3``)."""
    step = max(1, math.ceil(len(labels) / max_labels))
    ticks = list(range(0, len(labels), step))
    return ticks, [plot_text(labels[i]) + (f" ·{i}" if index else "") for i in ticks]


def note_figure(text: str, height: int = 140) -> go.Figure:
    """A figure holding only ``text`` (no axes, no grid), for a plot before its first result: a
    short note, never an empty axis. The background is transparent and the note has no colour of
    its own, so the page's theme (light or dark, see assets/style.css) shows through."""
    fig = go.Figure()
    fig.add_annotation(text=plot_text(text), x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                       font_size=14)
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=10, b=10),
                      xaxis=dict(visible=False), yaxis=dict(visible=False),
                      paper_bgcolor="rgba(0,0,0,0)", plot_bgcolor="rgba(0,0,0,0)")
    return fig


# ---------------------------------------------------------------- training curves (Pretrain, Fine-tune)

MAX_CURVE_POINTS = 400  # per curve, so each streamed figure stays small
RUN_COLORS = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#db2777", "#0891b2", "#4b5563"]  # a run each


def ema(values: list[float], weight: float) -> list[float]:
    """Exponential moving average (``weight`` of the past kept at each point; 0 = no smoothing)."""
    out, acc = [], None
    for v in values:
        acc = v if acc is None else weight * acc + (1 - weight) * v
        out.append(acc)
    return out


def downsample(xs: list, ys: list) -> tuple[np.ndarray, np.ndarray]:
    """The curve as arrays, thinned evenly to ``MAX_CURVE_POINTS``."""
    x, y = np.asarray(xs, dtype=np.float32), np.asarray(ys, dtype=np.float32)
    if len(x) > MAX_CURVE_POINTS:
        idx = np.linspace(0, len(x) - 1, MAX_CURVE_POINTS).astype(int)
        x, y = x[idx], y[idx]
    return x, y
