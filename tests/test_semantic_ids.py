"""Quantisers, de-duplication, SID table persistence and health."""
import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from minirec.data.dataset import leave_one_out
from minirec.profiles import Recipe
from minirec.sids.quantizers import CoBa, QuantizerConfig, RQKMeans, RQVAE, coba_config
from minirec.sids.semantic_ids import (SIDMismatchError, SIDTable, build_sid_table, codebook_health, deduplicate,
                                  level_health)
from minirec.data.synthetic import make_synthetic, planted_embeddings

SMALL = dict(levels=2, codebook_size=4, hidden=(64,), latent_dim=8)
RECIPE = Recipe(max_epochs=60, patience=0, batch_size=64, lr=1e-3)


@pytest.mark.parametrize("make", [
    lambda: RQKMeans(QuantizerConfig(**SMALL)),
    lambda: RQVAE(QuantizerConfig(**SMALL), RECIPE),
    lambda: CoBa(coba_config(**SMALL), RECIPE),
], ids=["RQ-KMeans", "RQ-VAE", "CoBa"])
def test_quantizers_recover_planted_categories(make, synthetic):
    x = planted_embeddings(synthetic)
    codes = make().fit(x, leave_one_out(synthetic).train)
    top = synthetic.items["top"].to_numpy()
    assert codes.shape == (synthetic.n_items, 2)
    ari = adjusted_rand_score(top, codes[:, 0])
    chance = np.mean([adjusted_rand_score(top, np.random.default_rng(s).permutation(codes[:, 0])) for s in range(5)])
    assert ari > 0.5 and ari > chance + 0.4, (ari, chance)


def test_balancing_bias_lowers_imbalance(ml100k_text):
    # same network, data and seed; only the selection bias differs (graph and uniformity off)
    cfg = dict(levels=2, codebook_size=32, graph=None, uniformity_weight=0.0, seed=0)
    plain = level_health(CoBa(coba_config(balance=False, **cfg), RECIPE).fit(ml100k_text), 32)
    balanced = level_health(CoBa(coba_config(balance=True, **cfg), RECIPE).fit(ml100k_text), 32)
    for p, b in zip(plain, balanced):
        assert b["perplexity"] > p["perplexity"] + 0.5, (p, b)
        assert b["max_share"] < p["max_share"], (p, b)


def test_deduplicate_makes_every_sid_unique():
    codes = np.array([[1, 2], [1, 2], [0, 0], [1, 2], [0, 1]])
    d = deduplicate(codes)
    np.testing.assert_array_equal(d[:, -1], [0, 1, 0, 2, 0])          # item order decides within a bucket
    assert len(np.unique(d, axis=0)) == len(codes)
    big = np.random.default_rng(0).integers(0, 3, (500, 2))
    assert len(np.unique(deduplicate(big), axis=0)) == 500


def test_save_load_roundtrip_and_mismatch(tmp_path, synthetic):
    x = planted_embeddings(synthetic)
    q = RQKMeans(QuantizerConfig(levels=2, codebook_size=4))
    path = tmp_path / "sids.npz"
    table = build_sid_table(q, x, synthetic, cache=path, encoder="planted")
    again = SIDTable.load(path, expected=dict(q.settings(), encoder="planted"), dataset=synthetic)
    np.testing.assert_array_equal(table.codes, again.codes)
    assert again.item_of(table.sid(5)) == 5
    with pytest.raises(SIDMismatchError, match="codebook_size"):
        SIDTable.load(path, expected=dict(q.settings(), codebook_size=8))
    other = make_synthetic(n_top=3, seed=1)
    with pytest.raises(SIDMismatchError, match="catalogue"):
        SIDTable.load(path, dataset=other)
    with pytest.raises(KeyError, match="belongs to no catalogue item"):
        table.item_of((9, 9, 9))
    # a cached table is reused only when made the same way
    cached = build_sid_table(q, x, synthetic, cache=path, encoder="planted")
    np.testing.assert_array_equal(cached.codes, table.codes)


def test_health_numbers(synthetic):
    codes = np.stack([synthetic.items["top"].to_numpy(), np.zeros(synthetic.n_items, dtype=int)], axis=1)
    table = SIDTable.from_codes(codes, 4, {"quantizer": "planted"}, synthetic)
    h = codebook_health(table, synthetic, leave_one_out(synthetic).train)
    assert h["utilisation_L1"] == 1.0 and h["perplexity_L1"] == pytest.approx(4.0, rel=0.05)
    assert h["utilisation_L2"] == 0.25 and h["dead_codes_L2"] == 3
    assert h["collision_rate"] == 1.0 and h["largest_bucket"] == synthetic.n_items // 4
    assert h["genre_purity_L1"] == 1.0 and h["genre_purity_L1_random"] < 0.6
    assert h["sharing_lift"] > 2.5


def test_uniformity_loss_pushes_only_codewords_closer_than_the_margin():
    import torch
    from minirec.profiles import get_profile
    from minirec.sids.quantizers import RQVAEModule
    config = QuantizerConfig(levels=1, codebook_size=4, latent_dim=4, uniformity_margin=0.5)
    module = RQVAEModule(8, config, get_profile("smoke").recipe("quantizer"))
    simplex = torch.eye(4)[None] * 3.0                    # four codewords, all pairwise distances equal
    module.codebooks.data.copy_(simplex)
    assert module.uniformity_loss().item() == 0.0          # every distance is above δ = half the mean distance
    crowded = simplex.clone()
    crowded[0, 1] = crowded[0, 0] + 0.05                  # two codewords almost on top of each other
    module.codebooks.data.copy_(crowded)
    loss = module.uniformity_loss()
    assert loss.item() > 0
    module.codebooks.data.copy_(crowded * 10)             # the margin scales with the codebook: same loss
    assert module.uniformity_loss().item() == pytest.approx(loss.item(), rel=1e-4)
    module.codebooks.data.copy_(crowded)
    module.uniformity_loss().backward()
    before = torch.dist(module.codebooks[0, 0], module.codebooks[0, 1]).item()
    with torch.no_grad():
        module.codebooks -= 0.1 * module.codebooks.grad
    assert torch.dist(module.codebooks[0, 0], module.codebooks[0, 1]).item() > before   # the pair is pushed apart


def test_sid_cache_path_covers_everything_that_makes_the_table(synthetic):
    """Course and study train CoBa for different epochs: their tables must not share a cache file (one would
    overwrite the other); k-means has no training recipe, so its table is the same file under both."""
    from dataclasses import replace

    from minirec.profiles import SIDConfig, get_profile
    from minirec.sids.quantizers import make_quantizer, sid_cache_path
    course, study = get_profile("course"), get_profile("study")
    assert course.recipe("quantizer").max_epochs != study.recipe("quantizer").max_epochs
    coba = {p.name: sid_cache_path(synthetic, make_quantizer("CoBa", p), p, "all-MiniLM-L6-v2") for p in (course, study)}
    assert coba["course"] != coba["study"] and coba["course"].parent == coba["study"].parent
    assert coba["course"].name.startswith("synthetic_CoBa_L3_K32_s0-")
    kmeans = [sid_cache_path(synthetic, make_quantizer("RQ-KMeans", p), p, "all-MiniLM-L6-v2") for p in (course, study)]
    assert kmeans[0] == kmeans[1]
    assert sid_cache_path(synthetic, make_quantizer("RQ-KMeans", course), course, "another-encoder") != kmeans[0]
    bf16 = replace(course, precision="bf16-mixed")
    assert sid_cache_path(synthetic, make_quantizer("CoBa", bf16), bf16, "all-MiniLM-L6-v2") != coba["course"]
    # the SID table every later notebook and the study read is named once, in the profile
    assert course.sids == study.sids == SIDConfig() and SIDConfig().quantizer == "CoBa"


def test_every_quantizer_is_built_per_seed_with_distinct_sids_and_cached_under_its_settings(synthetic, tmp_path,
                                                                                            monkeypatch):
    from minirec.data.dataset import leave_one_out
    from minirec.data.synthetic import planted_embeddings
    from minirec.profiles import get_profile
    from minirec.sids.quantizers import QUANTIZERS, build_every_quantizer, make_quantizer, sid_cache_path
    monkeypatch.setenv("MINIREC_CACHE_DIR", str(tmp_path))
    profile = get_profile("smoke")
    quantizers, tables = build_every_quantizer(synthetic, planted_embeddings(synthetic), leave_one_out(synthetic),
                                               profile, (0, 1), levels=2, codebook_size=4, encoder="planted")
    assert set(tables) == {0, 1} and all(set(t) == set(QUANTIZERS) for t in tables.values())
    for seed, by_name in tables.items():
        for name, table in by_name.items():
            assert len({tuple(c) for c in table.codes}) == synthetic.n_items
            assert sid_cache_path(synthetic, make_quantizer(name, profile, 2, 4, seed=seed), profile, "planted").exists()
    assert not (tables[0]["CoBa"].codes == tables[1]["CoBa"].codes).all()      # another seed, another table
