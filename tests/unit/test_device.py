"""Which device computes (llm_core/device.py), tested without a GPU by monkeypatching torch.cuda."""
import contextlib

import torch

from llm_core import device as D
from llm_core import load_model, registry


def test_cpu_without_cuda(monkeypatch):
    monkeypatch.delenv(D.DEVICE_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert D.pick_device() == torch.device("cpu")
    assert isinstance(D.autocast_for("cpu"), contextlib.nullcontext)
    assert D.device_summary().startswith("CPU · ")


def test_cuda_when_present_and_overrides(monkeypatch):
    monkeypatch.delenv(D.DEVICE_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert D.pick_device() == torch.device("cuda")
    assert D.pick_device("cpu") == torch.device("cpu")          # an explicit request wins
    monkeypatch.setenv(D.DEVICE_ENV, "cpu")
    assert D.pick_device() == torch.device("cpu")               # so does the environment
    monkeypatch.setenv(D.DEVICE_ENV, "cuda:1")
    assert D.pick_device() == torch.device("cuda", 1)


def test_bf16_autocast_only_on_a_bf16_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert isinstance(D.autocast_for("cuda"), contextlib.nullcontext)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    ctx = D.autocast_for("cuda")
    assert isinstance(ctx, torch.autocast) and ctx.fast_dtype == torch.bfloat16
    assert isinstance(D.autocast_for("cpu"), contextlib.nullcontext)   # never on the CPU
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Test GPU")
    assert D.device_summary("cuda") == "CUDA · Test GPU · bf16 autocast"


def test_decoding_copy_goes_to_the_picked_device(monkeypatch):
    # "meta" stands in for a GPU: the shared CPU model stays for the views, decoding gets a copy.
    bundle = load_model("untrained:tiny")
    monkeypatch.setattr(registry, "pick_device", lambda: torch.device("cpu"))
    assert bundle.for_precision("fp32") is bundle.model
    monkeypatch.setattr(registry, "pick_device", lambda: torch.device("meta"))
    before = registry._weight_bytes(bundle)
    copy = bundle.for_precision("fp32")
    assert copy is not bundle.model and copy.device.type == "meta" and bundle.model.device.type == "cpu"
    assert bundle.for_precision("fp32") is copy                      # made once
    assert registry._weight_bytes(bundle) == before + sum(p.numel() * 4 for p in copy.parameters())
    bundle.variants.pop("fp32@meta")
