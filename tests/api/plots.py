"""Reading plotly figures as gradio_client returns them (shared by the API tests)."""
from __future__ import annotations

import base64
import json

import numpy as np


def plot_data(plot) -> list[dict]:
    """The traces of a gr.Plot output as the client receives it."""
    fig = plot["plot"] if isinstance(plot, dict) else plot
    return (json.loads(fig) if isinstance(fig, str) else fig)["data"]


def values(arr):
    """A plotly array as a list: plain JSON lists, or numpy typed arrays ({"dtype", "bdata", "shape"})."""
    if isinstance(arr, dict) and "bdata" in arr:
        flat = np.frombuffer(base64.b64decode(arr["bdata"]), dtype=np.dtype(arr["dtype"]))
        if "shape" in arr:
            flat = flat.reshape([int(s) for s in str(arr["shape"]).split(",")])
        return flat.tolist()
    return list(arr)
