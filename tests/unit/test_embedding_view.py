"""The embedding projector: tokens, PCA, neighbours, analogies, positions, before vs after."""
import numpy as np
import pytest
import torch

from llm_core import GPTConfig, build_untrained, gpt2_tokenizer
from llm_core.views import embedding_view as ev

# GPT-2's vocabulary (so words resolve) on a small, fast model.
CFG = GPTConfig(context_length=32, emb_dim=32, n_heads=2, n_layers=2, drop_rate=0.0)


@pytest.fixture(scope="module")
def tok():
    return gpt2_tokenizer()


@pytest.fixture(scope="module")
def model():
    return build_untrained(CFG, seed=7)


def test_resolve_prefers_the_in_sentence_word_and_accepts_ids(tok):
    king = ev.resolve_token(tok, "king", tok.n_vocab)
    assert tok.encode(" king") == [king.id] and king.label == "␣king"
    assert ev.resolve_token(tok, "#50256", tok.n_vocab).id == tok.eot_id
    assert ev.resolve_token(tok, "<|endoftext|>", tok.n_vocab).id == tok.eot_id
    # A word that is only a token without the space still resolves.
    assert len(tok.encode(" ization")) == 2
    assert ev.resolve_token(tok, "ization", tok.n_vocab).id == tok.encode("ization")[0]


def test_unknown_word_explains_the_bpe_pieces(tok):
    with pytest.raises(ev.TokenNotFound, match="not a single token") as info:
        ev.resolve_token(tok, "Pneumonoultramicroscopic", tok.n_vocab)
    pieces = info.value.pieces
    assert len(pieces) > 1
    assert tok.decode([i for i, _ in pieces]) == " Pneumonoultramicroscopic"
    for bad in ("", "   ", "#99999999"):
        with pytest.raises(ev.TokenNotFound):
            ev.resolve_token(tok, bad, tok.n_vocab)


def test_pca_recovers_the_dominant_direction():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(500, 6, generator=gen) * torch.tensor([10.0, 3.0, 1.0, 0.5, 0.1, 0.1])
    basis = ev.pca(x, 2)
    assert basis.components.shape == (6, 2)
    assert abs(basis.components[0, 0].item()) > 0.99 and abs(basis.components[1, 1].item()) > 0.99
    assert basis.explained[0] > basis.explained[1] > 0
    assert torch.allclose(basis.components.T @ basis.components, torch.eye(2), atol=1e-5)
    # Variance along PC1 equals the largest eigenvalue share of the total variance.
    proj = basis.project(x)
    assert proj[:, 0].var(unbiased=False) / x.var(0, unbiased=False).sum() == pytest.approx(
        basis.explained[0], rel=1e-3)


@pytest.mark.parametrize("dims", [2, 3])
def test_projection_shapes_and_chosen_tokens_first(model, tok, dims):
    chosen = [tok.encode(" king")[0], tok.encode(" queen")[0]]
    proj = ev.project_token_embeddings(model, tok, chosen, dims=dims, n_points=300)
    assert proj.coords.shape == (300, dims) and proj.coords.dtype == np.float32
    assert proj.ids[:2].tolist() == chosen and proj.chosen == [0, 1]
    assert len(set(proj.ids.tolist())) == 300
    assert proj.labels[0] == "␣king"
    assert proj.explained.shape == (dims,)


def test_huge_point_counts_are_capped(model, tok):
    proj = ev.project_token_embeddings(model, tok, [], dims=2, n_points=10**9)
    assert len(proj.ids) == ev.MAX_POINTS
    assert "20,000" in proj.notice


def test_neighbours_start_with_the_token_itself(model, tok):
    tid = tok.encode(" king")[0]
    result = ev.nearest_neighbours(model, tok, tid, k=8)
    assert result[0].id == tid and result[0].score == pytest.approx(1.0, abs=1e-5)
    scores = [n.score for n in result]
    assert scores == sorted(scores, reverse=True)
    # The scores are cosine similarities of the rows themselves.
    w = model.tok_emb.weight
    assert result[3].score == pytest.approx(
        torch.nn.functional.cosine_similarity(w[tid], w[result[3].id], dim=0).item(), abs=1e-5)


def test_analogy_excludes_its_inputs_and_finds_a_planted_answer(tok):
    m = build_untrained(CFG, seed=3)
    king, man, woman, queen = (tok.encode(w)[0] for w in (" king", " man", " woman", " queen"))
    w = m.tok_emb.weight.data
    # Plant queen = king - man + woman (on unit vectors) so the arithmetic must find it.
    unit = lambda i: w[i] / w[i].norm()  # noqa: E731
    w[queen] = unit(king) - unit(man) + unit(woman)
    result = ev.analogy(m, tok, "king", "man", "woman", k=5)
    assert result.results[0].id == queen
    ids = {n.id for n in result.results}
    assert not ids & {king, man, woman}
    assert set(result.input_scores) == {king, man, woman}


def test_analogy_with_unknown_word_names_the_word(model, tok):
    with pytest.raises(ev.TokenNotFound, match="Zzyzxqq"):
        ev.analogy(model, tok, "king", "Zzyzxqq", "woman")


def test_positional_similarity_and_components(model):
    sim = ev.positional_similarity(model, 20)
    assert sim.shape == (20, 20)
    assert np.allclose(np.diag(sim), 1.0, atol=1e-5) and np.allclose(sim, sim.T, atol=1e-6)
    assert ev.positional_similarity(model, 10**6).shape == (CFG.context_length,) * 2
    coords, explained = ev.positional_components(model, 3)
    assert coords.shape == (CFG.context_length, 3) and explained.shape == (3,)


def test_input_embedding_is_token_plus_position_with_book_shapes(tok):
    m = build_untrained(GPTConfig(context_length=16, emb_dim=256, n_heads=4, n_layers=1, drop_rate=0.0))
    text = " ".join(["In the sunlit terraces of the palace every effort moves you"] * 4)
    out = ev.input_embedding(m, tok, text, batch_size=8, length=4)
    assert out.shapes["input embeddings"] == (8, 4, 256)          # the book's [8, 4, 256]
    assert out.shapes["token ids"] == (8, 4) and out.shapes["position embeddings"] == (4, 256)
    assert np.allclose(out.embed, out.tok_emb + out.pos_emb[None], atol=1e-6)
    assert np.allclose(out.tok_emb[0, 1], m.tok_emb.weight[out.ids[0, 1]].detach().numpy())
    assert out.ids.flatten().tolist() == tok.encode(text)[:32]
    # Short text: one row of what there is; batch and length never exceed the text.
    short = ev.input_embedding(m, tok, "Hi", batch_size=8, length=4)
    assert short.shapes["input embeddings"] == (1, 1, 256)
    with pytest.raises(ValueError):
        ev.input_embedding(m, tok, "", 8, 4)


def test_compare_identical_models_shows_no_movement(model, tok):
    ids = [tok.encode(" king")[0], tok.encode(" queen")[0]]
    same = ev.compare_embeddings(model, model, tok, ids, k=3)
    assert np.allclose(same.before_xy, same.after_xy, atol=1e-3)
    assert all(m.cosine == pytest.approx(1.0, abs=1e-4) and m.shared_neighbours == 3 for m in same.moves)


def test_compare_undoes_a_rotation_and_sees_a_moved_token(model, tok):
    other = build_untrained(CFG, seed=7)
    q, _ = torch.linalg.qr(torch.randn(CFG.emb_dim, CFG.emb_dim, generator=torch.Generator().manual_seed(1)))
    king, queen = tok.encode(" king")[0], tok.encode(" queen")[0]
    with torch.no_grad():
        other.tok_emb.weight.copy_(model.tok_emb.weight @ q)   # same table, rotated
        other.tok_emb.weight[king] = -other.tok_emb.weight[king]  # and one token moved
    cmp = ev.compare_embeddings(model, other, tok, [king, queen], k=3)
    by_id = {m.id: m for m in cmp.moves}
    assert by_id[queen].cosine > 0.99
    assert by_id[king].cosine < 0


def test_same_tokenizer(tok):
    assert ev.same_tokenizer(tok, gpt2_tokenizer())
    from llm_core.tokenizers import bpe_from_merges
    small = bpe_from_merges("toy", {bytes([i]): i for i in range(256)}, tok.encoding._pat_str, True)
    assert not ev.same_tokenizer(tok, small)


def test_cached_pca_follows_in_place_training(tok):
    m = build_untrained(CFG, seed=11)
    n = ev.usable_vocab(m, tok)
    first = ev.token_pca(m, n, 2)
    assert ev.token_pca(m, n, 2) is first                      # cached
    with torch.no_grad():
        m.tok_emb.weight[:, 0] *= 50                          # an optimizer step would do the same
    moved = ev.token_pca(m, n, 2)
    assert moved is not first and abs(moved.components[0, 0].item()) > 0.99
