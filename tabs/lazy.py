"""Views drawn when a tab is first opened in a session, not while the app starts.

Start-up builds every tab; a tab whose first view needs a forward pass would make the whole
app wait for it (benchmarks/bench_startup.py). ``on_first_open`` runs the tab's own handler
once per session when its tab is selected, with the inputs as they are then.
"""
from __future__ import annotations

import gradio as gr


def on_first_open(tab: gr.Tab, fn, inputs: list, outputs: list, **listener) -> None:
    """Fill ``outputs`` with ``fn(*inputs)`` the first time this session selects ``tab``."""
    drawn = gr.State(False)

    def first(done, *args):
        if done:
            return (True, *(gr.skip() for _ in outputs))
        try:
            return (True, *fn(*args))
        except gr.Error:  # the page still works; the first click shows the reason
            return (True, *(gr.skip() for _ in outputs))

    listener.setdefault("show_progress", "hidden")  # no spinner over views already drawn
    tab.select(first, [drawn, *inputs], [drawn, *outputs], api_visibility="private", **listener)
