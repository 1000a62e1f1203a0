"""Think-Ahead: offline prefixes from the reasoning model, online completion by a fast model restricted to them."""
import copy

import numpy as np
import pytest
import torch

from minirec.data.dataset import pad_left
from minirec.models.beam_search import constrained_beam_search
from minirec.reasoning.think_ahead import ThinkAhead, prefix_recall
from minirec.sids.semantic_ids import SIDTable


@pytest.fixture(scope="module")
def models(onerec_setup, onerec_trained):
    split, table, _ = onerec_setup
    return split, table, onerec_trained["reason"].trained_module.eval(), onerec_trained["base"].module.eval()


def _batch(split, users):
    inputs = split.test.inputs(10)
    x = torch.as_tensor(pad_left([inputs[u] for u in users]))
    exclude = torch.as_tensor(pad_left([split.test.histories[u] for u in users]))
    return x, exclude


def test_offline_prefixes_are_the_reasoners_best_first_codes(models):
    """levels=1: the cached prefixes are the first codes ranked by the reasoner's log-probability after its rationale."""
    split, table, reasoner, fast = models
    x, _ = _batch(split, [0])
    ahead = ThinkAhead(reasoner, fast, levels=1, n_prefixes=3)
    prefixes = ahead.offline(x, None)
    v = reasoner.vocab
    thought = reasoner.write_rationales(reasoner.prompts(x))[0]
    prompt = reasoner.prompts(x)[0] + [v.think_token] + thought + [v.think_end_token, v.item_token]
    with torch.no_grad():
        logp = torch.log_softmax(reasoner.model(input_ids=torch.tensor([prompt])).logits[0, -1].float(), -1)
    first = logp[v.level_slice(0)]
    codes = reasoner.trie.child[0][0]                         # prefix id of each first code (-1: unused)
    used = [c for c in range(len(codes)) if codes[c] >= 0]
    best = sorted(used, key=lambda c: -float(first[c]))[:3]
    assert prefixes[0].tolist() == [int(codes[c]) for c in best]


def test_online_stays_under_the_cached_prefixes_and_equals_the_fast_model_when_all_are_cached(models):
    split, table, reasoner, fast = models
    users = list(range(6))
    x, exclude = _batch(split, users)
    ahead = ThinkAhead(reasoner, fast, levels=1, n_prefixes=2)
    prefixes = ahead.offline(x, exclude)
    items = ahead.online(x, exclude, prefixes, k=5)
    allowed = ahead.allowed_items(prefixes)
    for u, row in enumerate(items.tolist()):
        real = [i for i in row if i >= 0]
        assert real and all(allowed[u, i] for i in real)
        assert not set(real) & set(split.test.histories[u].tolist())
    every = torch.arange(int(ahead.item_prefix.max()) + 1).expand(len(users), -1)
    torch.testing.assert_close(ahead.online(x, exclude, every, k=5), fast.beam_search(x, exclude, 5)[0])


def test_cached_evaluation_matches_one_call_and_never_beats_its_prefix_ceiling(models):
    split, table, reasoner, fast = models
    ahead = ThinkAhead(reasoner, fast, levels=1, n_prefixes=2)
    cache = ahead.prefix_cache(split.test, batch_size=64)
    assert cache.shape == (len(split.test), 2)
    cached = ahead.evaluate_cached(split.test, cache, batch_size=64)
    from minirec.metrics import evaluate
    direct = evaluate(ahead, split.test, ks=(5, 10, 20), max_len=ahead.max_len, batch_size=64)
    np.testing.assert_allclose(cached["ndcg@10"], direct["ndcg@10"])
    ceiling = prefix_recall(cache, split.test.targets, ahead.item_prefix)
    assert (cached["recall@20"] <= ceiling).all()
    with pytest.raises(ValueError, match="holds"):
        ahead.evaluate_cached(split.test, cache[:3])


def test_think_ahead_refuses_models_on_other_sids_and_bad_settings(models):
    split, table, reasoner, fast = models
    shifted = copy.copy(fast)                  # the same model, reading another item -> SID table
    shifted.sid_table = SIDTable(np.roll(np.asarray(table.codes), 1, axis=0), table.codebook_size, dict(table.settings))
    with pytest.raises(ValueError, match="one SID table"):
        ThinkAhead(reasoner, shifted)
    with pytest.raises(ValueError, match="levels"):
        ThinkAhead(reasoner, fast, levels=reasoner.trie.depth)
    with pytest.raises(ValueError, match="n_prefixes"):
        ThinkAhead(reasoner, fast, levels=1, n_prefixes=0)
    with pytest.raises(ValueError, match="levels"):
        constrained_beam_search(fast.model, fast.vocab, fast.trie, torch.zeros(1, 2, dtype=torch.long),
                                torch.ones(1, 2, dtype=torch.long), 4, 2, levels=0)


def test_prefixes_merged_over_several_sampled_rationales_are_distinct_trie_prefixes(models):
    split, table, reasoner, fast = models
    x, exclude = _batch(split, [0, 1, 2])
    reasoner.decode_with(n_rationales=3, rationale_temperature=1.0)
    try:
        torch.manual_seed(0)
        prefixes = ThinkAhead(reasoner, fast, levels=1, n_prefixes=3).offline(x, exclude)
    finally:
        reasoner.decode_with(n_rationales=1, rationale_temperature=0.0)
    n_prefixes = reasoner.trie.child[1].shape[0]
    for row in prefixes.tolist():
        real = [p for p in row if p >= 0]
        assert real and len(set(real)) == len(real) and all(p < n_prefixes for p in real)


def test_choose_and_serve_picks_the_best_validation_setting_and_scores_it_on_test(models):
    from minirec.reasoning.think_ahead import choose_and_serve
    split, table, reasoner, fast = models
    served = choose_and_serve(reasoner, fast, split, cached_levels=(1, 2), prefix_counts=(2, 4), bench_users=8,
                              bench_rounds=1)
    assert [(r["levels"], r["prefixes"]) for r in served["sweep"]] == [(1, 2), (1, 4), (2, 2), (2, 4)]
    best = max(served["sweep"], key=lambda r: r["val_ndcg10"])
    assert (served["levels"], served["prefixes"], served["val_ndcg10"]) == (best["levels"], best["prefixes"],
                                                                            best["val_ndcg10"])
    ahead = ThinkAhead(reasoner, fast, levels=best["levels"], n_prefixes=best["prefixes"])
    expected = ahead.evaluate_cached(split.test, ahead.prefix_cache(split.test))["ndcg@10"]
    np.testing.assert_allclose(served["per_user"]["ndcg@10"], expected)
    assert all(r["val_ndcg10"] <= r["prefix_ceiling"] + 1e-9 for r in served["sweep"])
    assert set(served["seconds"]) == {"fast model alone", "reasoning model alone", "Think-Ahead offline",
                                      "Think-Ahead online"} and min(served["seconds"].values()) > 0


def test_prefix_sweep_rows_read_the_first_columns_of_one_cache_per_level(models):
    from minirec.reasoning.think_ahead import prefix_sweep
    split, table, reasoner, fast = models
    rows = prefix_sweep(reasoner, fast, split.valid, cached_levels=(1,), prefix_counts=(1, 3))
    ahead = ThinkAhead(reasoner, fast, levels=1, n_prefixes=3)
    cache = ahead.prefix_cache(split.valid)
    for row, n in zip(rows, (1, 3)):
        assert row["val_ndcg10"] == pytest.approx(float(ahead.evaluate_cached(split.valid, cache[:, :n])["ndcg@10"].mean()))
        assert row["prefix_ceiling"] == pytest.approx(float(prefix_recall(cache[:, :n], split.valid.targets,
                                                                          ahead.item_prefix).mean()))
    # more cached prefixes never allow fewer items, and never more than the catalogue
    assert 0 < rows[0]["items_allowed"] <= rows[1]["items_allowed"] <= len(reasoner.sid_table.codes)
