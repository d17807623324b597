"""Which device computes (llm_core/device.py), tested without a GPU by monkeypatching torch.cuda."""
import contextlib
import math

import pytest
import torch

from llm_core import device as D
from llm_core import load_model, registry
from llm_core.pretrain import make_loaders
from llm_core.training import calc_loss_batch


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


class Moved:
    """Stands in for a batch tensor: records how it is moved and hands back a real CPU tensor."""

    def __init__(self, t):
        self.t, self.calls = t, []

    def to(self, device, **kw):
        self.calls.append((torch.device(device), kw))
        return self.t


def test_batches_for_a_gpu_are_pinned_and_copied_without_blocking():
    assert D.pin_host_memory("cuda") and D.pin_host_memory(torch.device("cuda", 1))
    assert not any(D.pin_host_memory(d) for d in ("cpu", torch.device("cpu"), "meta", None))
    t = torch.arange(3)
    assert D.to_device(t, "cpu") is t                      # the CPU path: no copy, as before
    uniform = lambda ids: torch.zeros(*ids.shape, 4)       # noqa: E731  logits of a 4-token vocabulary
    for device, blocking in ((torch.device("cuda"), False), (torch.device("cpu"), True)):
        ids, targets = Moved(torch.tensor([[1, 2]])), Moved(torch.tensor([[2, 3]]))
        loss = calc_loss_batch(ids, targets, uniform, device)   # the copy every training step makes
        assert ids.calls == targets.calls == [(device, {"non_blocking": not blocking})]
        assert loss.item() == pytest.approx(math.log(4))


def test_the_pretrain_cli_pins_its_loaders_for_a_gpu_only(monkeypatch):
    ids = list(range(200))
    for device, pinned in ((torch.device("cuda"), True), (torch.device("cpu"), False)):
        train, train_eval, val = make_loaders(ids, ids[:50], context=8, stride=8, batch_size=4, seed=1,
                                              device=device)
        assert (train.pin_memory, train_eval.pin_memory, val.pin_memory) == (pinned, pinned, pinned)
    # the training batches go through Tensor.pin_memory (stood in for: it needs a GPU), unchanged
    seen = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self, *a, **k: seen.append(self) or self.clone())
    plain = list(make_loaders(ids, ids, 8, 8, 4, 1, "cpu")[0])
    assert not seen
    pinned = list(make_loaders(ids, ids, 8, 8, 4, 1, "cuda")[0])
    assert len(seen) == 2 * len(pinned) and len(pinned) == len(plain) > 0
    assert all(torch.equal(a, b) for pa, pb in zip(plain, pinned) for a, b in zip(pa, pb))
