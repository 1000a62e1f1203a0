"""Co-occurrence graph, propagation and the real sentence encoder."""
import numpy as np
import pytest
import scipy.sparse as sp

from minirec.data.dataset import from_interactions, leave_one_out
from minirec.sids import embeddings
from minirec.sids import graph


def test_graph_counts_window_and_symmetry():
    a = graph.cooccurrence_graph([np.array([0, 1, 2, 0])], n_items=4, window=1).toarray()
    expected = np.zeros((4, 4))
    for i, j in ((0, 1), (1, 2), (2, 0)):
        expected[i, j] += 1
        expected[j, i] += 1
    np.testing.assert_array_equal(a, expected)
    a2 = graph.cooccurrence_graph([np.array([0, 1, 2])], n_items=3, window=2, weighting="inverse").toarray()
    assert a2[0, 2] == 0.5 and a2[0, 1] == 1.0
    with pytest.raises(ValueError, match="window"):
        graph.cooccurrence_graph([np.array([0, 1])], 2, window=0)


def test_graph_uses_training_items_only():
    # user a: 0 1 2 | valid 3 | test 4 ; user b: 5 6 7 | valid 3 | test 4
    ds = from_interactions("t", ["a"] * 5 + ["b"] * 5, [0, 1, 2, 3, 4, 5, 6, 7, 3, 4], list(range(10)))
    split = leave_one_out(ds)
    a = graph.cooccurrence_graph(split.train, ds.n_items, window=5).toarray()
    idx = {raw: i for i, raw in enumerate(ds.item_ids)}
    assert a[idx["3"]].sum() == 0 and a[idx["4"]].sum() == 0       # held-out items have no links
    assert a[idx["2"], idx["0"]] == 1


def test_propagation_matches_the_formula():
    rng = np.random.default_rng(0)
    adj = sp.csr_matrix(np.array([[0, 2, 0], [2, 0, 1], [0, 1, 0]], dtype=float))
    x = rng.normal(size=(3, 4)).astype(np.float32)
    a_hat = graph.normalize_symmetric(adj).toarray()
    d = np.diag(1 / np.sqrt(adj.toarray().sum(1)))
    np.testing.assert_allclose(a_hat, d @ adj.toarray() @ d)
    alpha, k_g = 0.3, 2
    h1 = (1 - alpha) * a_hat @ x + alpha * x
    h2 = (1 - alpha) * a_hat @ h1 + alpha * x
    beta = np.array([alpha * (1 - alpha) ** k for k in range(3)])
    beta /= beta.sum()
    expected = beta[0] * x + beta[1] * h1 + beta[2] * h2
    np.testing.assert_allclose(graph.propagate(x, sp.csr_matrix(a_hat), alpha, k_g), expected, rtol=1e-5)


def test_isolated_items_keep_their_embedding():
    x = np.eye(3, dtype=np.float32)
    a_hat = graph.normalize_symmetric(sp.csr_matrix((3, 3)))
    np.testing.assert_allclose(graph.propagate(x, a_hat, 0.5, 3), x, atol=1e-6)


def test_real_sentence_encoder_and_cache(tmp_path):
    texts = ["Toy Story (1995). Genres: Animation, Children's, Comedy.",
             "Toy Story 2 (1999). Genres: Animation, Children's, Comedy.",
             "Schindler's List (1993). Genres: Drama, War."]
    x = embeddings.encode_texts(texts, cache_dir=tmp_path, verbose=False)
    assert x.shape == (3, 384)
    assert x[0] @ x[1] > x[0] @ x[2] + 0.2            # a real encoder knows the sequel is closer
    assert len(list(tmp_path.glob("*.npy"))) == 1
    again = embeddings.encode_texts(texts, cache_dir=tmp_path, verbose=False)
    np.testing.assert_array_equal(x, again)
    assert embeddings.cache_key("m", texts, True) != embeddings.cache_key("m", texts[:2] + ["x"], True)
