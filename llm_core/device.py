"""Which device computes, and in which precision: one place for every tab and CLI.

- ``pick_device()``: CUDA when present (``LLM_EXPLORER_DEVICE=cpu`` or ``cuda:N`` overrides),
  else the CPU. Training (Pretrain, Fine-tune, the CLIs) and inference use it.
- ``autocast_for(device)``: bf16 autocast on a CUDA GPU that supports bf16 (Ampere and
  newer): matmuls in bf16, weights and optimizer state stay fp32. On the CPU it does nothing
  (this project's CPUs have no fast bf16: fp32 is the fast path there).
- ``pin_host_memory(device)`` / ``to_device(t, device)``: batches bound for a CUDA GPU are
  made in pinned (page-locked) host memory and copied with ``non_blocking=True``, so the copy
  runs asynchronously instead of through a staging buffer; on the CPU neither applies.
- ``device_summary()``: the line the app's header shows.

The CUDA branches were written without a GPU on the machine this project was built on; the
picking logic is tested with ``torch.cuda.is_available`` monkeypatched (tests/unit/test_device.py).
"""
from __future__ import annotations

import contextlib
import os

import torch

DEVICE_ENV = "LLM_EXPLORER_DEVICE"


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """The requested device, else ``$LLM_EXPLORER_DEVICE``, else CUDA when present, else the CPU."""
    if device is not None and str(device) != "":
        return torch.device(device)
    env = os.environ.get(DEVICE_ENV, "").strip()
    if env:
        return torch.device(env)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def bf16_supported(device: torch.device | str) -> bool:
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    try:
        return bool(torch.cuda.is_bf16_supported())
    except (RuntimeError, AssertionError):
        return False


def autocast_for(device: torch.device | str | None):
    """A context that runs the forward pass in bf16 on a bf16-capable GPU, else a no-op."""
    if device is not None and bf16_supported(device):
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def pin_host_memory(device: torch.device | str | None) -> bool:
    """Whether batches for ``device`` should be built in pinned host memory (CUDA only: pinned
    pages can be copied to the GPU asynchronously; on the CPU there is no copy to speed up)."""
    return device is not None and torch.device(device).type == "cuda"


def to_device(t: torch.Tensor, device: torch.device | str | None) -> torch.Tensor:
    """``t`` moved to ``device``; to a GPU with ``non_blocking`` (kernels queued after it on the
    same stream wait for the copy, so this is safe; from pinned memory it also frees the CPU)."""
    return t.to(device, non_blocking=pin_host_memory(device))


def device_summary(device: torch.device | str | None = None) -> str:
    """E.g. ``CPU · 2 threads`` or ``CUDA · NVIDIA H100 · bf16 autocast``."""
    device = pick_device(device)
    if device.type == "cuda":
        try:
            name = torch.cuda.get_device_name(device)
        except (RuntimeError, AssertionError):
            name = str(device)
        return f"CUDA · {name}" + (" · bf16 autocast" if bf16_supported(device) else " · fp32")
    return f"{device.type.upper()} · {torch.get_num_threads()} threads · fp32 (int8 decoding available)"
