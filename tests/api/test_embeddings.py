"""Stage 3 · the embedding projector through its API (/embeddings and its companions).

The session's model may be the shipped default or an untrained one (other tests switch it),
so these tests use token ids (#n) or check structure, never model-specific words.
"""
import numpy as np
import pytest
from gradio_client.exceptions import AppError

from llm_core import load_model
from tests.api.plots import plot_data, values


def project(client, words="#10, #11, #12", dims="2-D", n_points=500):
    return client.predict(words, dims, n_points, api_name="/embeddings")


def test_projection_plots_the_sample_with_chosen_tokens_labelled(client):
    plot, note = project(client)
    traces = plot_data(plot)
    assert len(traces) == 2
    background, chosen = traces
    assert len(values(chosen["x"])) == 3 and len(chosen["text"]) == 3
    assert len(values(background["x"])) + len(values(chosen["x"])) == 500
    assert "principal components" in note and "#10" in note


def test_projection_in_3d(client):
    plot, _ = project(client, dims="3-D", n_points=300)
    traces = plot_data(plot)
    assert all(t["type"] == "scatter3d" for t in traces)
    assert len(values(traces[1]["z"])) == 3


def test_huge_point_counts_are_capped_and_tiny_ones_refused(client):
    plot, _ = project(client, words="", n_points=10**8)
    total = sum(len(values(t["x"])) for t in plot_data(plot))
    assert 2 <= total <= 20_000
    with pytest.raises(AppError, match="between 2"):
        project(client, n_points=1)
    with pytest.raises(AppError, match="not in the list of choices"):
        project(client, dims="4-D")


def test_unknown_words_in_the_list_are_explained_not_fatal(client):
    plot, note = project(client, words="#10, Zqxjvwkzzqxjv, <script>alert(1)</script>")
    assert "Not single tokens" in note and "pieces" in note and "Zqxjvwkzzqxjv →" in note
    assert "<script>" not in note  # user text is escaped
    assert len(values(plot_data(plot)[1]["x"])) == 1


def rows(table):
    return table["data"]


def test_neighbours_start_with_the_token_itself(client):
    table, note = client.predict("#10", 5, api_name="/embedding_neighbours")
    data = rows(table)
    assert len(data) == 6
    assert data[0][2] == 10 and data[0][3] == pytest.approx(1.0, abs=1e-3)
    assert [r[3] for r in data] == sorted((r[3] for r in data), reverse=True)


@pytest.mark.parametrize("word,message", [("", "empty"), ("Zqxjvwkzzqxjv", "not a single token"),
                                          ("#99999999", "out of range"), ("x" * 500, "limit")])
def test_neighbours_bad_input(client, word, message):
    with pytest.raises(AppError, match=message):
        client.predict(word, 5, api_name="/embedding_neighbours")


def test_neighbours_bad_count(client):
    with pytest.raises(AppError, match="between 1 and 100"):
        client.predict("#10", 1000, api_name="/embedding_neighbours")


def test_analogy_excludes_its_inputs(client):
    table, note = client.predict("#20", "#21", "#22", 8, api_name="/embedding_analogy")
    ids = [r[2] for r in rows(table)]
    assert len(ids) == 8 and not {20, 21, 22} & set(ids)
    assert "left out" in note and "Be warned" in note


def test_analogy_names_the_unknown_word(client):
    with pytest.raises(AppError, match="(?i)word to subtract.*Zqxjvwkzzqxjv.*pieces"):
        client.predict("#20", "Zqxjvwkzzqxjv", "#22", 5, api_name="/embedding_analogy")


def test_positions_heatmap_and_components(client):
    heat, pcs, note = client.predict(16, api_name="/embedding_positions")
    z = np.array(values(plot_data(heat)[0]["z"]))
    assert z.shape == (16, 16) and np.allclose(np.diag(z), 1.0, atol=1e-4)
    assert len(plot_data(pcs)) == 3
    heat, _, _ = client.predict(10**6, api_name="/embedding_positions")
    assert len(values(plot_data(heat)[0]["z"])) <= 512


def test_input_embedding_shapes_are_written_out(client):
    text = "In the sunlit terraces of the palace " * 10
    shapes, fig, table = client.predict(text, 8, 4, api_name="/embedding_input")
    assert "| token ids | `[8, 4]` |" in shapes
    assert "`[8, 4, 256]`" in shapes  # the book's example is quoted
    assert len(rows(table)) == 4
    first = rows(table)[0]
    assert first[5] == pytest.approx(first[3] + first[4], abs=2e-3)   # token + position = input
    with pytest.raises(AppError, match="empty"):
        client.predict("   ", 8, 4, api_name="/embedding_input")
    with pytest.raises(AppError, match="Batch size"):
        client.predict(text, 0, 4, api_name="/embedding_input")


def test_before_vs_after_against_an_untrained_twin(client):
    fig, table, note = client.predict("__untrained_twin__", "__active__", "#10, #11", 3, api_name="/embedding_compare")
    assert len(rows(table)) == 2
    assert "Procrustes" in note
    assert len(plot_data(fig)) == 3


def test_before_vs_after_bad_choices(client):
    with pytest.raises(AppError):
        client.predict("no-such-model-anywhere", "__active__", "#10", 3, api_name="/embedding_compare")
    with pytest.raises(AppError, match="Choose the model"):
        client.predict("", "__active__", "#10", 3, api_name="/embedding_compare")
    with pytest.raises(AppError, match="None of the tokens"):
        client.predict("__untrained_twin__", "__active__", "Zqxjvwkzzqxjv", 3, api_name="/embedding_compare")
    with pytest.raises(AppError, match="both untrained:tiny"):
        client.predict("untrained:tiny", "untrained:tiny", "#10", 3, api_name="/embedding_compare")


def test_before_vs_after_two_chosen_models(client):
    # Two models with GPT-2's tokenizer, neither of them necessarily the active one.
    fig, table, note = client.predict("untrained:tiny", "untrained:mini", "#10, #11, #12", 2,
                                      api_name="/embedding_compare")
    assert "untrained:tiny" in note and "untrained:mini" in note
    assert [r[2] for r in table["data"]] and all(r[2].endswith("/2") for r in table["data"])


def test_before_vs_after_needs_one_tokenizer(client):
    from llm_core.registry import builtin_names, load_model

    other = next((n for n in builtin_names() if load_model(n).tokenizer.name != "gpt2"), None)
    if other is None:
        pytest.skip("no installed model with a tokenizer other than GPT-2's")
    with pytest.raises(AppError, match="same id means different text"):
        client.predict(other, "untrained:tiny", "#10", 3, api_name="/embedding_compare")


def test_default_labels_are_whole_words_of_the_shipped_tokenizer():
    """' cat' is ' c' + 'at' in the shipped BPE: such words are not offered as defaults."""
    from tabs.embeddings import _defaults

    tok = load_model("pydoc-gpt").tokenizer
    d = _defaults("pydoc-gpt")
    words = [w.strip() for w in d["words"].split(",")]
    assert words and "cat" not in words and "red" not in words
    assert all(len(tok.encode(" " + w)) == 1 for w in words + list(d["analogy"]) + [d["query"]])
