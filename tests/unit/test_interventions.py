"""Hook points that read and write, and the interventions built on them."""
import pytest
import torch

from llm_core import GPTConfig, build_untrained
from llm_core import interventions as iv
from llm_core.model import hook_point_names

CFG = GPTConfig(vocab_size=97, context_length=24, emb_dim=32, n_heads=4, n_layers=3, drop_rate=0.0, qkv_bias=True)


@pytest.fixture(scope="module")
def model():
    m = build_untrained(CFG, seed=7)
    with torch.no_grad():  # non-trivial LayerNorm weights and biases, so nothing cancels by accident
        g = torch.Generator().manual_seed(3)
        for mod in m.modules():
            if hasattr(mod, "shift"):
                mod.scale.copy_(1 + 0.3 * torch.randn(mod.scale.shape, generator=g))
                mod.shift.copy_(0.2 * torch.randn(mod.shift.shape, generator=g))
    return m


@pytest.fixture(autouse=True)
def no_grad():
    with torch.no_grad():
        yield


@pytest.fixture(scope="module")
def ids():
    return torch.tensor([[5, 17, 3, 17, 42, 8, 60, 11]])


def test_trace_keys_and_hook_names_are_one_scheme(model, ids):
    trace = model.run_with_trace(ids)
    assert list(trace) == hook_point_names(CFG)  # the same names, in the order the pass meets them
    assert trace["blocks.1.attn.head_out"].shape == (1, CFG.n_heads, ids.shape[1], CFG.head_dim)
    # every layer index in a name is a trf_blocks index of the state dict
    layers = {int(n.split(".")[1]) for n in trace if n.startswith("blocks.")}
    assert {f"trf_blocks.{i}.att.out_proj.weight" for i in layers} <= set(model.state_dict())


def test_reading_hooks_change_nothing_and_see_what_the_trace_sees(model, ids):
    plain = model(ids)
    seen = {}
    hooks = {name: (lambda v, name=name: seen.__setitem__(name, v.clone())) for name in hook_point_names(CFG)}
    hooked = model.run_with_hooks(ids, hooks)
    trace = model.run_with_trace(ids)
    assert torch.allclose(hooked, plain, atol=1e-5)
    assert set(seen) == set(trace)
    for name in trace:
        assert torch.allclose(seen[name], trace[name], atol=1e-5), name


def test_a_head_out_hook_keeps_the_fused_path_and_a_weights_hook_uses_the_explicit_one(model, ids):
    calls = []
    model.run_with_hooks(ids, {"blocks.0.attn.head_out": lambda v: calls.append("head_out")})
    model.run_with_hooks(ids, {"blocks.0.attn.weights": lambda v: calls.append("weights")})
    assert calls == ["head_out", "weights"]


def test_writing_hook_replaces_the_value_downstream(model, ids):
    # uniform attention in layer 2 instead of the learned weights
    t = ids.shape[1]
    uniform = torch.tril(torch.ones(t, t)) / torch.arange(1, t + 1).unsqueeze(1)
    trace = model.run_with_trace(ids, hooks={"blocks.2.attn.weights": lambda w: uniform.expand_as(w)})
    assert torch.allclose(trace["blocks.2.attn.weights"][0, 1], uniform)
    v = trace["blocks.2.attn.v"][0]
    assert torch.allclose(trace["blocks.2.attn.head_out"][0], uniform @ v, atol=1e-5)
    assert not torch.allclose(trace["logits"], model(ids), atol=1e-4)


def test_a_hook_of_the_wrong_shape_is_refused(model, ids):
    with pytest.raises(ValueError, match="shape"):
        model.run_with_hooks(ids, {"blocks.0.resid_mid": lambda v: v[:, :2]})


def test_ablating_nothing_is_the_plain_forward(model, ids):
    assert torch.allclose(iv.ablate_heads(model, ids, []), model(ids), atol=1e-6)


def test_ablating_a_head_equals_zeroing_its_slice_by_hand(model, ids):
    layer, head, hd = 1, 2, CFG.head_dim
    out_proj = model.trf_blocks[layer].att.out_proj
    original = out_proj.weight.detach().clone()
    with torch.no_grad():  # by hand: the head's columns of out_proj see zeros, so they can be zeroed
        out_proj.weight[:, head * hd:(head + 1) * hd] = 0.0
        by_hand = model(ids)
        out_proj.weight.copy_(original)
    ablated = iv.ablate_heads(model, ids, [(layer, head)])
    assert torch.allclose(ablated, by_hand, atol=1e-5)
    assert not torch.allclose(ablated, model(ids), atol=1e-4)


def test_mean_ablation_sets_the_head_to_its_mean_over_positions(model, ids):
    trace = model.run_with_trace(ids)
    mean = trace["blocks.0.attn.head_out"][0, 3].mean(0)
    ablated = model.run_with_trace(ids, hooks=iv.ablation_hooks(model, ids, [(0, 3)], "mean"))
    got = ablated["blocks.0.attn.head_out"][0, 3]
    assert torch.allclose(got, mean.expand_as(got), atol=1e-6)
    assert torch.allclose(ablated["blocks.0.attn.head_out"][0, :3], trace["blocks.0.attn.head_out"][0, :3])


def test_bad_heads_and_modes_are_refused(model, ids):
    with pytest.raises(iv.InterventionError, match="does not exist"):
        iv.ablate_heads(model, ids, [(3, 0)])
    with pytest.raises(iv.InterventionError, match="mode"):
        iv.ablate_heads(model, ids, [(0, 0)], mode="noise")


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_patching_the_whole_residual_stream_gives_the_clean_logits(model, ids, layer):
    corrupt = ids.clone()
    corrupt[0, 1] = 33
    clean_logits = model(ids)
    assert not torch.allclose(model(corrupt), clean_logits, atol=1e-4)
    patched = iv.patch_activation(model, ids, corrupt, f"blocks.{layer}.resid_pre")
    assert torch.allclose(patched, clean_logits, atol=1e-5)


def test_patching_one_position_changes_only_that_position_and_later(model, ids):
    corrupt = ids.clone()
    corrupt[0, 1] = 33
    patched = iv.patch_activation(model, ids, corrupt, "blocks.1.resid_pre", position=4)
    corrupt_logits = model(corrupt)
    assert torch.allclose(patched[0, :4], corrupt_logits[0, :4], atol=1e-6)   # causal: earlier ones unchanged
    assert not torch.allclose(patched[0, 4], corrupt_logits[0, 4], atol=1e-5)  # that position moves...
    assert not torch.allclose(patched[0, 5], corrupt_logits[0, 5], atol=1e-5)  # ...and later ones, through attention


def test_patching_needs_equal_lengths(model, ids):
    with pytest.raises(iv.InterventionError, match="same number"):
        iv.patch_activation(model, ids, ids[:, :-1], "blocks.0.resid_pre")


def test_a_heads_attribution_equals_its_single_ablation(model, ids):
    target = 13
    att = iv.head_attribution(model, ids, target)
    clean = torch.log_softmax(model(ids)[0, -1], -1)[target]
    assert att.clean_logprob == pytest.approx(float(clean), abs=1e-5)
    assert att.delta.shape == (CFG.n_layers, CFG.n_heads)
    for layer in range(CFG.n_layers):
        for head in range(CFG.n_heads):
            single = torch.log_softmax(iv.ablate_heads(model, ids, [(layer, head)])[0, -1], -1)[target]
            assert att.delta[layer, head] == pytest.approx(float(single - clean), abs=1e-4), (layer, head)


def test_attribution_in_small_batches_and_mean_mode_and_at_a_position(model, ids, monkeypatch):
    monkeypatch.setattr(iv, "MAX_BATCH_TOKENS", ids.shape[1])  # one head per batch
    att = iv.head_attribution(model, ids, 4, mode="mean", position=5)
    logits = iv.ablate_heads(model, ids[:, :6], [(2, 1)], mode="mean")
    clean = torch.log_softmax(model(ids)[0, 5], -1)[4]
    assert att.position == 5
    assert att.delta[2, 1] == pytest.approx(float(torch.log_softmax(logits[0, -1], -1)[4] - clean), abs=1e-4)


def test_patching_map_ends_at_one_and_starts_at_zero_before_the_change(model, ids):
    corrupt = ids.clone()
    corrupt[0, 2] = 50
    res = iv.patching_map(model, ids, corrupt, clean_token=7, corrupt_token=9)
    t = ids.shape[1]
    assert res.restored.shape == (CFG.n_layers, t)
    # position 2 at layer 0 carries all that differs: patching it restores everything
    assert float(res.restored[0, 2]) == pytest.approx(1.0, abs=1e-4)
    # positions before the change are the same in both prompts: patching them does nothing
    assert torch.allclose(res.restored[:, :2], torch.zeros(CFG.n_layers, 2), atol=1e-4)
    # against the unbatched patch
    one = iv.patch_activation(model, ids, corrupt, "blocks.1.resid_pre", position=5)[0, -1]
    diff = float(one[7] - one[9])
    expected = (diff - res.corrupt_diff) / (res.clean_diff - res.corrupt_diff)
    assert float(res.restored[1, 5]) == pytest.approx(expected, abs=1e-4)


def test_patching_map_sites_and_refusals(model, ids):
    corrupt = ids.clone()
    corrupt[0, 2] = 50
    mlp = iv.patching_map(model, ids, corrupt, 7, 9, site="ff.out")
    one = iv.patch_activation(model, ids, corrupt, "blocks.0.ff.out", position=2)[0, -1]
    expected = (float(one[7] - one[9]) - mlp.corrupt_diff) / (mlp.clean_diff - mlp.corrupt_diff)
    assert float(mlp.restored[0, 2]) == pytest.approx(expected, abs=1e-4)
    with pytest.raises(iv.InterventionError, match="same token"):
        iv.patching_map(model, ids, corrupt, 7, 7)
    with pytest.raises(iv.InterventionError, match="site"):
        iv.patching_map(model, ids, corrupt, 7, 9, site="ln1")


def test_direct_logit_attribution_adds_up_to_the_logit(model, ids):
    trace = model.run_with_trace(ids)
    for pos, target in ((-1, 13), (3, 50)):
        dla = iv.direct_logit_attribution(model, trace, target, pos)
        assert dla.total == pytest.approx(float(trace["logits"][0, pos, target]), abs=1e-4)
        assert torch.allclose(dla.heads.sum(1) + dla.attn_bias, dla.attn, atol=1e-4)


def test_direct_logit_attribution_of_the_last_layer_mlp_is_exact_when_it_alone_changes(model, ids):
    """With the frozen divisor, removing one part's write moves the logit by exactly its share."""
    trace = model.run_with_trace(ids)
    dla = iv.direct_logit_attribution(model, trace, 13)
    last = CFG.n_layers - 1
    scale = dla.scale
    norm = model.final_norm
    frozen = {"ln_f": lambda x: None}
    removed = model.run_with_trace(ids, hooks={f"blocks.{last}.ff.out": lambda f: torch.zeros_like(f), **frozen})
    # the same final LayerNorm with its divisor frozen at the clean pass's value
    resid = removed[f"blocks.{last}.resid_post"][0, -1]
    logit = ((resid - resid.mean()) / scale * norm.scale + norm.shift) @ model.out_head.weight[13]
    assert float(trace["logits"][0, -1, 13]) - float(logit) == pytest.approx(float(dla.mlp[last]), abs=1e-4)
