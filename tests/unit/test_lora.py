"""LoRA: the book's layer, wrapping a GPTModel, merging, counting, adapters on disk."""
import math

import pytest
import torch
import torch.nn as nn

from llm_core.config import PRESETS, GPTConfig
from llm_core.lora import (
    AdapterInfo, LinearWithLoRA, LoRAError, LoRALayer, apply_adapter, apply_lora, count_parameters,
    expand_targets, freeze, load_adapter, lora_layers, lora_parameter_count, merge_lora, model_fingerprint,
    read_adapter, replace_linear_with_lora, save_adapter, unmerge_lora, update_norms,
)
from llm_core.model import GPTModel, build_untrained

CFG = GPTConfig(vocab_size=97, context_length=16, emb_dim=32, n_heads=2, n_layers=2, drop_rate=0.0)


def _ids(seed=0, b=2, t=10):
    return torch.randint(0, CFG.vocab_size, (b, t), generator=torch.Generator().manual_seed(seed))


def _randomise_B(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora.B.copy_(torch.randn(layer.lora.B.shape, generator=g) * 0.1)


def test_lora_layer_shapes_init_and_scaling():
    layer = LoRALayer(32, 48, rank=4, alpha=8)
    assert layer.A.shape == (32, 4) and layer.B.shape == (4, 48)
    assert torch.count_nonzero(layer.B) == 0
    # Kaiming-uniform with a=√5 on [32, 4]: fan_in is dim 1 (= rank), bound = 1/sqrt(fan_in).
    bound = 1 / math.sqrt(4)
    assert layer.A.abs().max() <= bound and layer.A.abs().max() > 0.5 * bound
    assert layer.scaling == 2.0
    with torch.no_grad():
        layer.B.fill_(1.0)
    x = torch.randn(3, 32)
    torch.testing.assert_close(layer(x), 2.0 * x @ layer.A @ layer.B)


def test_b_zero_leaves_outputs_unchanged():
    base = build_untrained(CFG, seed=3)
    ids = _ids()
    with torch.no_grad():
        before = base(ids)
    tuned = build_untrained(CFG, seed=3)
    wrapped = apply_lora(tuned, rank=4, alpha=8, targets="all")
    assert len(wrapped) == 2 * 6 + 1
    with torch.no_grad():
        torch.testing.assert_close(tuned(ids), before, rtol=0, atol=0)


def test_merge_then_forward_equals_unmerged():
    model = build_untrained(CFG, seed=4)
    apply_lora(model, rank=4, alpha=16, targets=("attention", "feed-forward", "head"))
    _randomise_B(model)
    ids = _ids(1)
    with torch.no_grad():
        unmerged = model(ids)
        merge_lora(model)
        assert all(layer.merged for layer in lora_layers(model).values())
        merged = model(ids)
        torch.testing.assert_close(merged, unmerged, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(merged, build_untrained(CFG, seed=4)(ids), atol=1e-3)
        unmerge_lora(model)
        torch.testing.assert_close(model(ids), unmerged, rtol=1e-5, atol=1e-5)


def test_merge_into_tied_head_leaves_embedding_alone():
    cfg = CFG.with_(tie_weights=True)
    model = build_untrained(cfg, seed=5)
    emb = model.tok_emb.weight.detach().clone()
    apply_lora(model, rank=2, alpha=2, targets="head")
    _randomise_B(model)
    merge_lora(model)
    torch.testing.assert_close(model.tok_emb.weight, emb, rtol=0, atol=0)


def test_only_lora_parameters_get_gradients():
    model = build_untrained(CFG, seed=6).train()
    apply_lora(model, rank=4, alpha=8, targets=("attention", "feed-forward"))
    logits = model(_ids(2))
    logits.sum().backward()
    for name, p in model.named_parameters():
        if ".lora." in name:
            assert p.requires_grad and p.grad is not None, name
        else:
            assert not p.requires_grad and p.grad is None, name
    # With B = 0 the gradient reaches B (A's gradient is zero until B moves).
    layer = lora_layers(model)["trf_blocks.0.att.W_query"]
    assert layer.lora.B.grad.abs().sum() > 0


def test_targets_and_groups():
    assert expand_targets("attention") == ("q", "k", "v", "out")
    assert expand_targets(["feed-forward", "q"]) == ("q", "ff_in", "ff_out")
    assert expand_targets("all")[-1] == "head"
    for bad in ([], "", "mlp", ["q", "nope"]):
        with pytest.raises(LoRAError):
            expand_targets(bad)


@pytest.mark.parametrize("rank,alpha", [(0, 8), (-1, 8), (33, 8), (2.5, 8), (4, 0), (4, -1), (4, float("nan")), (4, "x")])
def test_bad_rank_or_alpha(rank, alpha):
    model = build_untrained(CFG)
    with pytest.raises(LoRAError):
        apply_lora(model, rank=rank, alpha=alpha, targets="attention")  # emb_dim 32: rank 33 too big


def test_counts_on_tiny_model_match_formula():
    model = build_untrained(CFG)
    total_before = model.num_parameters()
    apply_lora(model, rank=4, alpha=8, targets=("attention", "feed-forward"))
    counts = count_parameters(model)
    expected = lora_parameter_count(CFG, 4, ("attention", "feed-forward"))
    assert counts.lora == counts.trainable == expected
    assert counts.total == total_before + expected


def test_book_gpt2_small_classifier_counts_on_meta_device():
    # Appendix E: GPT-2 small (OpenAI weights: qkv bias) with a 2-class head, rank 16 everywhere.
    cfg = PRESETS["gpt2-small"].with_(qkv_bias=True)
    with torch.device("meta"):
        model = GPTModel(cfg)
        model.out_head = nn.Linear(cfg.emb_dim, 2)
    assert count_parameters(model).trainable == 124_441_346
    freeze(model)
    with torch.device("meta"):
        replace_linear_with_lora(model, rank=16, alpha=16)
    assert count_parameters(model).trainable == 2_666_528
    assert lora_parameter_count(cfg, 16, "all", head_out=2) == 2_666_528
    with torch.device("meta"):
        again = GPTModel(cfg)
        again.out_head = nn.Linear(cfg.emb_dim, 2)
        apply_lora(again, rank=16, alpha=16, targets="all")
    assert count_parameters(again).lora == 2_666_528


def test_update_norms_lora_and_full():
    model = build_untrained(CFG, seed=7)
    apply_lora(model, rank=2, alpha=4, targets="attention")
    norms = update_norms(model)
    assert set(norms) == {(t, i) for t in ("q", "k", "v", "out") for i in range(2)}
    assert all(v == 0.0 for v in norms.values())
    _randomise_B(model)
    layer = lora_layers(model)["trf_blocks.1.att.W_value"]
    expected = torch.linalg.matrix_norm(layer.lora.scaling * layer.lora.A @ layer.lora.B).item()
    assert update_norms(model)[("v", 1)] == pytest.approx(expected, rel=1e-5)
    base, full = build_untrained(CFG, seed=7), build_untrained(CFG, seed=7)
    with torch.no_grad():
        full.trf_blocks[0].ff.layers[0].weight += 0.5
    fn = update_norms(full, base)
    assert fn[("ff_in", 0)] == pytest.approx(0.5 * math.sqrt(32 * 128), rel=1e-4)
    assert fn[("q", 0)] == 0.0


def test_adapter_roundtrip_and_identity_check(tmp_path):
    base = build_untrained(CFG, seed=8)
    model = build_untrained(CFG, seed=8)
    model.out_head = nn.Linear(CFG.emb_dim, 3)
    apply_lora(model, rank=4, alpha=8, targets=("attention", "feed-forward"))
    model.out_head.weight.requires_grad_(True)
    model.out_head.bias.requires_grad_(True)
    _randomise_B(model)
    with torch.no_grad():
        model.out_head.weight.normal_()
    info = AdapterInfo(base_model="test", base_fingerprint=model_fingerprint(base, skip=("out_head",)),
                       method="lora", rank=4, alpha=8, targets=expand_targets(("attention", "feed-forward")),
                       head_classes=3, extra={"labels": ["a", "b", "c"]})
    path = save_adapter(tmp_path / "a.safetensors", model, info)
    tensors, info2 = read_adapter(path)
    assert info2 == info
    assert "out_head.weight" in tensors and "trf_blocks.0.att.W_query.lora.A" in tensors
    assert not any(k.endswith(("W_query.weight", "tok_emb.weight")) for k in tensors)  # small: no base weights
    loaded, _ = load_adapter(path, base)
    ids = _ids(3)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids), model.eval()(ids))
        torch.testing.assert_close(base(ids), build_untrained(CFG, seed=8)(ids))  # base untouched
    other = build_untrained(CFG, seed=9)
    with pytest.raises(LoRAError, match="trained on 'test'"):
        load_adapter(path, other)


def test_failed_save_keeps_previous_adapter(tmp_path):
    model = build_untrained(CFG)
    apply_lora(model, rank=2, alpha=2, targets="q")
    info = AdapterInfo("m", model_fingerprint(model), "lora", 2, 2.0, ("q",))
    path = save_adapter(tmp_path / "keep.safetensors", model, info)
    first = path.read_bytes()
    with pytest.raises(LoRAError):
        save_adapter(path, build_untrained(CFG).requires_grad_(False), info)  # nothing trainable
    assert path.read_bytes() == first


def test_bad_adapter_files(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00\x01not a safetensors file")
    with pytest.raises(LoRAError):
        read_adapter(junk)
    from safetensors.torch import save_file
    plain = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(2)}, str(plain))
    with pytest.raises(LoRAError, match="not an LLM Explorer adapter"):
        read_adapter(plain)


def test_wrapped_layer_is_still_linear_like():
    lin = nn.Linear(8, 4)
    w = LinearWithLoRA(lin, 2, 4)
    assert w.weight is lin.weight and w.bias is lin.bias


def test_fused_forward_equals_the_books_sum_with_gradients():
    lin = nn.Linear(16, 12)
    layer = LinearWithLoRA(lin, rank=4, alpha=8)
    with torch.no_grad():
        layer.lora.B.normal_()
    x = torch.randn(3, 5, 16, requires_grad=True)
    out = layer(x)
    book = lin(x) + layer.lora(x)  # the book's LinearWithLoRA.forward
    torch.testing.assert_close(out, book)
    g = torch.randn_like(out)
    params = [x, layer.lora.A, layer.lora.B]
    for a, b in zip(torch.autograd.grad(out, params, g), torch.autograd.grad(book, params, g)):
        torch.testing.assert_close(a, b)


def test_a_rank_larger_than_the_layer_is_refused_with_its_shape():
    from llm_core.lora import LoRAError, check_rank_alpha

    check_rank_alpha(16, 32.0, 64, 192)                      # fits
    with pytest.raises(LoRAError, match=r"larger than the layer \(64→192\)"):
        check_rank_alpha(65, 32.0, 64, 192)
