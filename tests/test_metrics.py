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


def test_two_level_statistic_by_hand():
    """Two seeds (rows) of three users: each resample's statistic is the mean over the drawn (seed, user) cells."""
    diff = np.array([[1.0, 2.0, 3.0],
                     [10.0, 20.0, 30.0]])
    seeds = np.array([[1, 1],           # seed 1 twice
                      [0, 1]])          # each seed once
    users = np.array([[[0, 0, 0], [2, 2, 1]],        # seed 1: users 0,0,0 -> 10,10,10; seed 1: 2,2,1 -> 30,30,20
                      [[0, 1, 2], [0, 1, 2]]])       # seed 0: 1,2,3; seed 1: 10,20,30
    means = metrics.two_level_means(diff, seeds, users)
    assert means.tolist() == pytest.approx([(10 + 10 + 10 + 30 + 30 + 20) / 6, (1 + 2 + 3 + 10 + 20 + 30) / 6])


def test_two_level_bootstrap_carries_the_seed_noise_a_user_bootstrap_hides():
    """Every user gains +1 under seed 0 and -1 under seed 1: averaged over seeds, every user's difference is 0, so
    the user bootstrap gives a zero-width interval; the seeds disagree, so the two-level interval must not. With two
    seeds and no user noise the resampled means are -1, 0, 0, +1 with probabilities 1/4, 1/2, 1/4, so the 2.5% and
    97.5% quantiles are -1 and +1."""
    a = np.array([np.ones(50), -np.ones(50)])
    b = np.zeros_like(a)
    users_only = metrics.paired_bootstrap(a.mean(axis=0), b.mean(axis=0), "x", n_boot=2000)
    assert (users_only.low, users_only.high) == (0.0, 0.0)
    two = metrics.paired_bootstrap(a, b, "x", n_boot=2000)
    assert (two.low, two.high) == (-1.0, 1.0) and two.n_seeds == 2 and two.n_users == 50
    assert not two.significant and two.diff == 0.0
    # one seed: exactly the user bootstrap (the same draws)
    rng = np.random.default_rng(1)
    x, y = rng.random(300), rng.random(300)
    assert metrics.paired_bootstrap(x[None], y[None], "x", n_boot=300) == metrics.paired_bootstrap(x, y, "x", n_boot=300)
    # a real gain with little seed noise stays beyond noise
    gain = metrics.paired_bootstrap(np.stack([x + 0.2, x + 0.25, x + 0.15]), np.stack([x, x, x]), "x", n_boot=500)
    assert gain.significant and gain.low > 0.1
    with pytest.raises(ValueError, match=r"\(seeds, users\)"):
        metrics.paired_bootstrap(np.zeros((2, 3)), np.zeros((3, 3)))
