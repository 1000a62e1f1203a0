"""The protocol against hand-computed values."""
import numpy as np
import pytest
import torch

from minirec import metrics


def test_topk_metrics_hand_computed():
    topk = torch.tensor([[3, 1, 2, 0, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19]] * 4)
    targets = torch.tensor([3, 2, 9, 99])           # ranks 1, 3, 10, miss
    m = metrics.topk_metrics(topk, targets)
    assert m["recall@5"].tolist() == [1, 1, 0, 0]
    assert m["recall@10"].tolist() == [1, 1, 1, 0]
    np.testing.assert_allclose(m["ndcg@5"], [1.0, 0.5, 0.0, 0.0])
    np.testing.assert_allclose(m["ndcg@10"], [1.0, 0.5, 1 / np.log2(11), 0.0])
    assert metrics.summarize(m)["recall@20"] == pytest.approx(0.75)


def test_topk_needs_enough_items():
    with pytest.raises(ValueError, match="need at least 20"):
        metrics.topk_metrics(torch.zeros(2, 10, dtype=torch.long), torch.zeros(2, dtype=torch.long))


def test_exclusion_and_stable_ties():
    scores = torch.tensor([[1.0, 3.0, 3.0, 0.0, 3.0]])
    assert metrics.topk_from_scores(scores, None, 3).tolist() == [[1, 2, 4]]       # ties: lower index first
    ex = torch.tensor([[2, -1, 1]])                                                 # -1 = padding
    assert metrics.topk_from_scores(scores, ex, 3).tolist() == [[4, 0, 3]]


def test_paired_bootstrap():
    rng = np.random.default_rng(0)
    a = rng.random(2000)
    clearly_better = metrics.paired_bootstrap(a + 0.1, a, "x", n_boot=500)
    assert clearly_better.significant and clearly_better.low > 0.09
    noise = metrics.paired_bootstrap(a, a + rng.normal(0, 0.5, 2000) * 0.01, "x", n_boot=500)
    assert noise.low < noise.diff < noise.high
    same_mean = metrics.paired_bootstrap(a, rng.permutation(a), "x", n_boot=500)
    assert not same_mean.significant and "within noise" in same_mean.verdict()
    with pytest.raises(ValueError):
        metrics.paired_bootstrap(a, a[:10])
