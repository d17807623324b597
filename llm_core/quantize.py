"""int8 weights for CPU decoding: every ``nn.Linear`` (the output head included) as int8.

Decoding one token at batch 1 is bound by how fast the weights stream from memory, so
storing them in one byte instead of four lifts that limit about four times. Training never
uses this: it is for the shared inference models only (``ModelBundle.for_precision``).

What is used, and why (measured on the project's 2-core AVX2 EPYC, torch 2.13 CPU, one row
``x @ W``, µs per call):

============================  ==========  ==========  ============
layer (in × out)              fp32        torch.ao    torchao 0.18
============================  ==========  ==========  ============
768 × 3072 (GPT-2 MLP up)     ~110        ~35         280 (w8a8), 970 (w8 only)
768 × 50,257 (output head)    ~4,900      ~270        24,500 (w8a8), 27,600 (w8 only)
============================  ==========  ==========  ============

- ``torchao`` 0.18 installs without pulling another torch, but has no fast CPU kernel here
  (it falls back to dequantise-then-matmul): 3-100x slower than ``torch.ao``;
- ``torch._weight_int8pack_mm`` (weight-only int8) took 780 µs on 768 × 3072 (no AVX-512);
- ``torch.ao.quantization.quantize_dynamic`` with ``per_channel_dynamic_qconfig`` (fbgemm:
  int8 weights with one scale per output channel, activations quantised per call to uint8)
  is the fast one, so it is what this module uses. It is deprecated in favour of torchao,
  whose CPU path is not there yet; the deprecation warning is silenced here on purpose.

An own int8 matmul was not written: nothing measured suggested it could beat fbgemm.
Quality is measured in tests/unit/test_quantize.py (perplexity within 1 %, greedy tokens).
The quantised copy shares the embeddings and LayerNorms with the fp32 model (they are read
only), so it costs only the int8 weights (about a quarter of the Linear weights' bytes).
"""
from __future__ import annotations

import copy
import threading
import warnings

import torch
import torch.nn as nn

PRECISIONS = ("fp32", "int8")
PRECISION_LABELS = {"fp32": "fp32 (32-bit float weights)", "int8": "int8 (8-bit weights, CPU)"}


def check_precision(precision: str | None) -> str:
    p = (precision or "fp32").strip().lower()
    if p not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)} (got {precision!r})")
    return p


def _quantized_linear_types() -> tuple[type, ...]:
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    return (DynamicQuantizedLinear,)


_quant_lock = threading.Lock()  # quantize_dynamic swaps modules; one conversion at a time


def quantize_int8(model: nn.Module) -> nn.Module:
    """A copy of ``model`` for CPU decoding with every ``nn.Linear`` in per-channel int8.

    The original is untouched. Parameters that stay fp32 (embeddings, LayerNorms) are
    shared with it, not copied. The copy is in eval mode and has no trainable parameters.
    """
    if model.tok_emb.weight.device.type != "cpu":
        raise ValueError("int8 decoding runs on the CPU; this model is on "
                         f"{model.tok_emb.weight.device}")
    # Share every tensor (deepcopy's memo maps each one to itself): the Linear weights are
    # then replaced by int8 copies, everything else is read-only during inference.
    memo = {id(t): t for t in list(model.parameters()) + list(model.buffers())}
    with _quant_lock:
        q = copy.deepcopy(model, memo)
        q.eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao's deprecation notice (see module docstring)
            torch.ao.quantization.quantize_dynamic(
                q, qconfig_spec={nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig},
                dtype=torch.qint8, inplace=True)
    for p in q.parameters():
        p.requires_grad_(False)
    q.precision = "int8"
    q._decode_layout = True  # nothing left for prepare_for_decoding to transpose
    return q


def int8_linear_bytes(model: nn.Module) -> int:
    """Bytes held by the int8 Linear layers of ``model`` (weights, scales, zero points, biases)."""
    total = 0
    for m in model.modules():
        if isinstance(m, _quantized_linear_types()):
            w, b = m._packed_params._weight_bias()
            total += w.numel() * w.element_size()
            if w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
                total += w.q_per_channel_scales().numel() * 8 + w.q_per_channel_zero_points().numel() * 8
            if b is not None:
                total += b.numel() * b.element_size()
    return total


def weight_bytes(model: nn.Module) -> int:
    """All the bytes of weights ``model`` holds: parameters, buffers and int8 packed weights."""
    seen: set[int] = set()
    total = 0
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total + int8_linear_bytes(model)


def streamed_bytes_per_token(model: nn.Module) -> int:
    """Bytes of weights one decoding step must read: every Linear (int8 or fp32) plus one
    row of each embedding (the lookups). The bandwidth limit is memory bandwidth / this."""
    total = int8_linear_bytes(model)
    for m in model.modules():
        if isinstance(m, nn.Linear):
            total += m.weight.numel() * m.weight.element_size()
            if m.bias is not None:
                total += m.bias.numel() * m.bias.element_size()
        elif isinstance(m, nn.Embedding):
            total += m.weight.shape[1] * m.weight.element_size()
    return total
