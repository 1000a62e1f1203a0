"""Breakdowns by target popularity and history length: groups as defined, differences tested inside each group."""
import numpy as np
import pytest

from minirec.data.dataset import leave_one_out
from minirec.experiments.breakdown import by_group, history_groups, popularity_groups, training_counts


def test_popularity_groups_follow_training_counts(synthetic):
    split = leave_one_out(synthetic)
    counts = training_counts(split)
    assert counts.sum() == sum(len(s) for s in split.train)
    groups = popularity_groups(split, split.test, cold=5)
    target_counts = counts[split.test.targets]
    assert (groups[target_counts < 5] == "cold (<5)").all() and not (groups[target_counts >= 5] == "cold (<5)").any()
    warm = groups != "cold (<5)"
    head, tail = target_counts[groups == "head"], target_counts[groups == "tail"]
    assert head.min() >= tail.max()                                         # head items are the popular ones
    sizes = [int((groups == g).sum()) for g in ("tail", "torso", "head")]
    assert sum(sizes) == warm.sum() and max(sizes) - min(sizes) <= 1        # equal thirds of the warm users


def test_history_groups_are_thirds_by_length(synthetic):
    split = leave_one_out(synthetic)
    groups = history_groups(split.test)
    lengths = np.array([len(h) for h in split.test.histories])
    assert lengths[groups == "long"].min() >= lengths[groups == "short"].max()


def test_by_group_compares_inside_each_group():
    groups = np.array(["a"] * 50 + ["b"] * 50)
    ref = np.zeros(100)
    better_in_a = np.r_[np.ones(50), np.zeros(50)]
    frame = by_group({"ref": ref, "model": better_in_a}, groups, reference="ref", n_boot=200)
    rows = frame[frame["model"] == "model"].set_index("group")
    assert rows.loc["a", "verdict"] == "better" and rows.loc["b", "verdict"] == "within noise"
    assert rows.loc["a", "mean"] == pytest.approx(1.0) and rows.loc["a", "users"] == 50
    assert frame.attrs["bootstrap"]["a", "model"].diff == pytest.approx(rows.loc["a", "− ref"])
    assert ("a", "ref") not in frame.attrs["bootstrap"] and frame.attrs["bootstrap"]["b", "model"].n_users == 50
    with pytest.raises(ValueError, match="reference 'nope'"):
        by_group({"ref": ref}, groups, reference="nope")
    with pytest.raises(ValueError, match="one length"):
        by_group({"ref": ref[:10]}, groups, reference="ref")


def test_by_group_bootstraps_seeds_then_users_where_both_models_have_seeds():
    """Group a: the model gains +1 on seed 0 and loses 1 on seed 1. Averaged over seeds it ties the reference, and
    the user bootstrap would call the tie certain; over the shared seeds the interval spans [-1, +1]."""
    groups = np.array(["a"] * 40 + ["b"] * 40)
    ref = {0: np.zeros(80), 1: np.zeros(80), 2: np.zeros(80)}
    model = {0: np.r_[np.ones(40), np.ones(40)], 1: np.r_[-np.ones(40), np.ones(40)]}
    mean = {"ref": np.zeros(80), "model": np.mean(list(model.values()), axis=0)}
    frame = by_group(mean, groups, reference="ref", n_boot=1000, per_seed={"ref": ref, "model": model})
    a, b = frame.attrs["bootstrap"]["a", "model"], frame.attrs["bootstrap"]["b", "model"]
    assert a.n_seeds == 2 and (a.low, a.high) == (-1.0, 1.0) and a.n_users == 40
    assert b.significant and b.diff == pytest.approx(1.0)
    users_only = by_group(mean, groups, reference="ref", n_boot=1000).attrs["bootstrap"]["a", "model"]
    assert users_only.n_seeds == 1 and (users_only.low, users_only.high) == (0.0, 0.0)
