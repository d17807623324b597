"""The architecture view: parameter counts, the diagram, residual stream, logit lens, LayerNorm."""
import numpy as np
import pytest
import torch

from llm_core import PRESETS, GPTConfig, build_untrained, gpt2_tokenizer
from llm_core.views import architecture_view as arch_view

SMALL = GPTConfig(vocab_size=101, context_length=16, emb_dim=32, n_heads=4, n_layers=3, drop_rate=0.0)

BOOK = {  # untied, tied, fp32 MB of the untied model
    "gpt2-small": (163_009_536, 124_412_160, 621.83),
    "gpt2-medium": (406_212_608, 354_749_440, 1549.58),
    "gpt2-large": (838_220_800, 773_891_840, 3197.56),
    "gpt2-xl": (1_637_792_000, 1_557_380_800, 6247.68),
}


def test_gpt2_small_counts_from_the_model_equal_the_book():
    model = arch_view.build_on_meta(PRESETS["gpt2-small"])   # the real modules, no memory
    counts = arch_view.parameter_breakdown(model)
    assert counts.untied_total == 163_009_536 == model.num_parameters()
    assert counts.tied_total == 124_412_160
    assert round(counts.megabytes(counts.untied_total, "fp32"), 2) == 621.83
    assert counts.megabytes(counts.untied_total, "bf16") == pytest.approx(621.83 / 2, abs=0.01)
    # One block, as the book itemises it.
    assert counts.per_block("attention") == 2_360_064
    assert counts.per_block("feed_forward") == 4_722_432
    assert counts.per_block("norms") == 3_072


def test_tied_model_counts_the_head_once():
    model = arch_view.build_on_meta(PRESETS["gpt2-small"].with_(tie_weights=True))
    counts = arch_view.parameter_breakdown(model)
    assert counts.tied and counts.total == 124_412_160 == model.num_parameters()
    assert counts.untied_total == 163_009_536


@pytest.mark.parametrize("name", list(BOOK))
def test_formula_counts_equal_the_book(name):
    counts = arch_view.config_parameter_breakdown(PRESETS[name])
    untied, tied, mb = BOOK[name]
    assert (counts.untied_total, counts.tied_total) == (untied, tied)
    assert round(counts.megabytes(untied), 2) == mb


@pytest.mark.parametrize("changes", [{}, {"qkv_bias": True}, {"tie_weights": True},
                                     {"n_layers": 1, "n_heads": 1}, {"emb_dim": 48, "n_heads": 6}])
def test_formula_counts_equal_module_counts(changes):
    cfg = SMALL.with_(**changes)
    real = build_untrained(cfg)
    assert arch_view.config_parameter_breakdown(cfg) == arch_view.parameter_breakdown(real) == arch_view.parameter_breakdown(arch_view.build_on_meta(cfg))
    assert arch_view.config_parameter_breakdown(cfg).total == real.num_parameters()


def test_a_classifier_head_cannot_be_tied():
    model = build_untrained(SMALL)
    model.out_head = torch.nn.Linear(SMALL.emb_dim, 2)
    counts = arch_view.parameter_breakdown(model)
    assert counts.output_head == SMALL.emb_dim * 2 + 2 and not counts.tieable
    assert counts.tied_total is None and counts.total == model.num_parameters()


def test_diagram_follows_the_book_order_with_counts():
    counts = arch_view.config_parameter_breakdown(PRESETS["gpt2-small"])
    nodes = arch_view.architecture_diagram(PRESETS["gpt2-small"], counts)
    keys = [n.key for n in nodes]
    assert keys == ["ids", "tok_emb", "pos_emb", "drop_emb", "norm1", "att", "add1", "norm2", "ff", "add2",
                    "final_norm", "out_head"]
    in_block = [n.key for n in nodes if n.in_block]
    assert in_block == ["norm1", "att", "add1", "norm2", "ff", "add2"]
    by_key = {n.key: n for n in nodes}
    assert by_key["att"].params == 2_360_064 and by_key["ff"].params == 4_722_432
    assert by_key["out_head"].shape == "[B, T, 50,257]"
    block_sum = sum(n.params or 0 for n in nodes if n.in_block)
    outside = sum(n.params or 0 for n in nodes if not n.in_block)
    assert block_sum * counts.n_layers + outside == counts.untied_total


def test_activation_curves_show_gelu_below_zero():
    c = arch_view.activation_curves()
    neg = c["x"] < -0.5
    assert np.all(c["ReLU"][neg] == 0) and np.all(c["GELU"][neg] < 0)
    assert np.allclose(c["GELU"][c["x"] > 2.5], c["x"][c["x"] > 2.5], atol=0.02)


@pytest.fixture(scope="module")
def traced():
    model = build_untrained(SMALL, seed=5)
    ids = torch.tensor([[3, 17, 42, 8, 99, 5, 61]])
    return model, ids, model.run_with_trace(ids)


class _IdTokenizer:
    n_vocab = SMALL.vocab_size

    def token_bytes(self, i):
        return f"t{i}".encode()


def test_residual_norms_per_stage(traced):
    model, ids, trace = traced
    names, norms = arch_view.residual_norms(trace)
    assert names == ["embeddings", "after layer 0", "after layer 1", "after layer 2"]
    assert norms.shape == (4, ids.shape[1])
    assert norms[2, 4] == pytest.approx(trace["blocks.1.resid_post"][0, 4].norm().item(), rel=1e-5)


def test_logit_lens_last_stage_is_the_models_own_prediction(traced):
    model, ids, trace = traced
    lens = arch_view.logit_lens(model, _IdTokenizer(), trace, k=3)
    assert lens.top_ids.shape == lens.top_probs.shape == (SMALL.n_layers + 1, ids.shape[1], 3)
    with torch.no_grad():
        logits = model(ids)[0]
    assert torch.allclose(lens.last_logits, logits, atol=1e-5)
    assert lens.top_ids[-1, :, 0].tolist() == logits.argmax(-1).tolist()
    probs = torch.softmax(logits, -1)
    assert np.allclose(lens.top_probs[-1, :, 0], probs.max(-1).values.numpy(), atol=1e-6)
    assert lens.top_labels[-1][0][0] == f"t{lens.top_ids[-1, 0, 0]}"
    # Earlier stages are genuinely different read-outs.
    assert not np.array_equal(lens.top_probs[0], lens.top_probs[-1])


def test_logit_lens_decodes_words():
    from llm_core.views.token_text import token_label
    tok = gpt2_tokenizer()
    m = build_untrained(GPTConfig(context_length=16, emb_dim=32, n_heads=2, n_layers=2))
    ids = torch.tensor([tok.encode("Every effort moves you")])
    lens = arch_view.logit_lens(m, tok, m.run_with_trace(ids), k=2)
    assert len(lens.stages) == 3 and len(lens.top_labels[1]) == 4
    assert lens.top_labels[1][2] == [token_label(tok, int(i)) for i in lens.top_ids[1, 2]]


def test_layernorm_demo_on_real_activations(traced):
    model, ids, trace = traced
    with torch.no_grad():   # give the trained-looking norm a scale and shift of its own
        model.trf_blocks[1].norm2.scale.fill_(2.0)
        model.trf_blocks[1].norm2.shift.fill_(0.5)
    demo = arch_view.layernorm_demo(model, trace, layer=1, position=2, which="norm2")
    assert np.allclose(demo.before, trace["blocks.1.resid_mid"][0, 2].numpy())
    mean, var = demo.stats["normalised"]
    assert abs(mean) < 1e-5 and var == pytest.approx(1.0, abs=1e-3)
    assert demo.stats["after scale & shift"][0] == pytest.approx(0.5, abs=1e-4)
    assert demo.stats["after scale & shift"][1] == pytest.approx(4.0, abs=1e-2)
    assert np.allclose(demo.after, 2.0 * demo.normalised + 0.5, atol=1e-5)
    first = arch_view.layernorm_demo(model, trace, 0, -1, "norm1")
    assert np.allclose(first.after, trace["blocks.0.ln1"][0, -1].numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="layer"):
        arch_view.layernorm_demo(model, trace, 9, 0, "norm1")
    with pytest.raises(ValueError, match="position"):
        arch_view.layernorm_demo(model, trace, 0, 99, "norm1")


def test_overviews_from_the_model_and_from_its_config_agree():
    cfg = SMALL
    from_model = arch_view.model_overview(build_untrained(cfg))
    from_config = arch_view.config_overview(cfg)
    assert from_model.counts == from_config.counts and from_model.diagram == from_config.diagram
    assert from_model.diagram == arch_view.architecture_diagram(cfg, from_config.counts)


def test_prompt_view_holds_what_the_tab_draws():
    model = build_untrained(SMALL, seed=5)
    tok = _IdTokenizer()
    ids = [3, 17, 42, 8, 99, 5, 61]
    trace = model.run_with_trace(torch.tensor([ids]))
    view = arch_view.prompt_view(model, tok, ids, top_k=2, layer=1, position=-1, which="norm1")
    assert view.position == len(ids) - 1 and view.labels == [f"t{i}" for i in ids]
    names, norms = arch_view.residual_norms(trace)
    assert view.stages == names and np.allclose(view.norms, norms, atol=1e-5)
    assert view.lens.top_ids.shape[-1] == 2
    assert view.predicted == int(trace["logits"][0, -1].argmax()) and view.predicted_label == f"t{view.predicted}"
