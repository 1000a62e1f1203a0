"""Qwen3 backbone, SID vocabulary, constrained beam search and TIGER-mini."""
import numpy as np
import pytest
import torch

from minirec import metrics
from minirec.models.backbone import SIDVocabularyError, SIDVocabulary, build_text_tokenizer, load_backbone, tiny_config
from minirec.models.baselines import Popularity
from minirec.models.beam_search import (SIDTrie, brute_force_scores, constrained_beam_search, naive_beam_search, plain_step,
                                 transformers_beam_search)
from minirec.data.dataset import leave_one_out
from minirec.data.synthetic import planted_embeddings
from minirec.experiments.runner import RunSpec, run
from minirec.models.generative import GenerativeRecommender, GenRecConfig
from minirec.profiles import get_profile, with_recipe
from minirec.sids.quantizers import QuantizerConfig, RQKMeans
from minirec.sids.semantic_ids import SIDTable, build_sid_table, deduplicate, item_id_table

TINY = dict(hidden_size=32, intermediate_size=64, head_dim=8)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    codes = deduplicate(np.random.default_rng(0).integers(0, 4, (40, 2)))
    sizes = [4, 4, int(codes[:, -1].max()) + 1]
    model, tok, vocab = load_backbone("tiny", sizes, texts=["some item text"] * 4, text_vocab_size=30, **TINY)
    return model.eval(), tok, vocab, codes, SIDTrie(codes, sizes)


def prompts(vocab):
    p = torch.tensor([[vocab.pad_token, vocab.pad_token, vocab.bos_token, 20, 21], [vocab.bos_token, 23, 9, 10, 26]])
    return p, (p != vocab.pad_token).long()


def test_beam_search_equals_brute_force(tiny):
    model, _, vocab, codes, trie = tiny
    p, mask = prompts(vocab)
    exclude = torch.tensor([[0, 1, -1], [5, -1, -1]])
    items, scores = constrained_beam_search(model, vocab, trie, p, mask, beam_width=len(codes), k=20, exclude=exclude)
    for b in range(2):
        bf = brute_force_scores(model, vocab, codes, p[b][mask[b] > 0])
        bf[[e for e in exclude[b].tolist() if e >= 0]] = -torch.inf
        expected = torch.sort(bf, descending=True, stable=True)
        assert items[b].tolist() == expected.indices[:20].tolist()
        torch.testing.assert_close(scores[b], expected.values[:20], rtol=1e-4, atol=1e-4)


def test_batched_search_equals_per_user_loop_and_transformers_generate(tiny):
    model, _, vocab, codes, trie = tiny
    p, mask = prompts(vocab)
    items, scores = constrained_beam_search(model, vocab, trie, p, mask, beam_width=6, k=5)
    for b in range(2):
        ref_items, ref_scores = naive_beam_search(model, vocab, codes, p[b][mask[b] > 0], 6, 5)
        assert items[b].tolist() == ref_items
        np.testing.assert_allclose(scores[b].numpy(), ref_scores, rtol=1e-4, atol=1e-4)
    hf_items, hf_scores = transformers_beam_search(model, vocab, codes, p[1], 6, 5)
    assert items[1].tolist() == hf_items
    np.testing.assert_allclose(scores[1].numpy(), hf_scores, rtol=1e-4, atol=1e-4)


def test_no_invalid_sid_even_when_the_model_wants_one(tiny):
    model, _, vocab, codes, trie = tiny
    valid_tokens = set()
    for d in range(vocab.depth):
        valid_tokens |= {vocab.offsets[d] + c for c in np.unique(codes[:, d])}

    def adversarial_step(m, ids, tree, cache, depth):
        logits, cache = plain_step(m, ids, tree, cache, depth)
        logits = logits.clone()
        push = torch.ones(logits.shape[-1], dtype=torch.bool)
        push[list(valid_tokens)] = False
        logits[..., push] += 1e4                     # all the mass on tokens no catalogue prefix allows
        return logits, cache

    p, mask = prompts(vocab)
    exclude = torch.tensor([[0, 1, 2, 3], [4, 5, -1, -1]])
    items, scores = constrained_beam_search(model, vocab, trie, p, mask, 10, 10, exclude, step_fn=adversarial_step)
    assert (items >= 0).all() and (items < len(codes)).all()
    assert len(set(items[0].tolist()) & {0, 1, 2, 3}) == 0 and len(set(items[1].tolist()) & {4, 5}) == 0
    assert all(len(set(row)) == len(row) for row in items.tolist())


def test_exclusion_of_almost_everything_never_breaks_the_search(tiny):
    model, _, vocab, codes, trie = tiny
    p, mask = prompts(vocab)
    keep = [7, 13, 21]
    exclude = torch.tensor([[i for i in range(len(codes)) if i not in keep]] * 2)
    items, scores = constrained_beam_search(model, vocab, trie, p, mask, 8, 5, exclude)
    for row, sc in zip(items.tolist(), scores):
        assert sorted(row[:3]) == keep and row[3:] == [-1, -1]
        assert torch.isinf(sc[3:]).all()
    with pytest.raises(ValueError, match="beam width"):
        constrained_beam_search(model, vocab, trie, p, mask, 3, 5)


def test_vocabulary_mismatch_is_a_clear_error():
    tok = build_text_tokenizer(["a text"], [4, 4, 2], vocab_size=10)
    assert SIDVocabulary.from_tokenizer(tok, [4, 4, 2]).offsets == [8, 12, 16]
    with pytest.raises(SIDVocabularyError, match="lacks SID tokens"):
        SIDVocabulary.from_tokenizer(tok, [8, 4, 2])
    with pytest.raises(SIDVocabularyError, match="more SID tokens"):
        SIDVocabulary.from_tokenizer(tok, [4, 4, 1])


def test_pretrained_checkpoint_path_keeps_rows(tmp_path):
    # a "pretrained" Qwen3 saved by us, with a text-only tokeniser: no hub access needed
    from transformers import PreTrainedTokenizerFast, Qwen3ForCausalLM
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    raw = Tokenizer(models.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel()
    raw.train_from_iterator(["hello world"] * 3, trainers.BpeTrainer(vocab_size=60, special_tokens=["<unk>"]))
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>")
    torch.manual_seed(0)
    base = Qwen3ForCausalLM(tiny_config("tiny", len(tok), **TINY))
    base.save_pretrained(tmp_path / "ckpt")
    tok.save_pretrained(tmp_path / "ckpt")
    old_rows = base.get_input_embeddings().weight.detach().clone()
    model, tok2, vocab = load_backbone(str(tmp_path / "ckpt"), [4, 4, 2])
    weight = model.get_input_embeddings().weight
    assert weight.shape[0] == len(tok2) == len(tok) + 7 + 10      # 7 new specials (<unk> existed) + 10 SID tokens
    torch.testing.assert_close(weight[:len(tok)], old_rows)
    assert vocab.offsets[0] >= len(tok) and tok2.convert_ids_to_tokens(vocab.offsets[1] + 3) == "<b_3>"


SYNTH_RECIPE = dict(max_epochs=8, patience=8, batch_size=32, lr=3e-3, warmup_steps=20, horizon_steps=2000)


@pytest.fixture(scope="module")
def tiger_setup(synthetic, tmp_path_factory):
    """TIGER-mini trained once on the synthetic catalogue through the experiment runner."""
    split = leave_one_out(synthetic)
    table = build_sid_table(RQKMeans(QuantizerConfig(levels=2, codebook_size=4)), planted_embeddings(synthetic),
                            synthetic)
    config = GenRecConfig(max_items=10, beam_width=20, text_vocab_size=50,
                          backbone_overrides=dict(hidden_size=64, intermediate_size=128, head_dim=16))
    spec = RunSpec("TIGER-mini", GenerativeRecommender, config, table, synthetic.items["text"].tolist())
    profile = with_recipe(get_profile("smoke"), "generative", **SYNTH_RECIPE)
    runs_dir = tmp_path_factory.mktemp("runs")
    return split, table, spec, profile, runs_dir, run(spec, split, profile, runs_dir=runs_dir)


def test_trained_tiger_mini_beats_popularity(tiger_setup):
    split, *_, runs = tiger_setup
    pop = metrics.evaluate(Popularity(split), split.test)
    assert runs.per_seed["ndcg@10"][0] > pop["ndcg@10"].mean() + 0.15


def test_saved_tiger_mini_recommends_the_same(tiger_setup, tmp_path):
    split, table, *_, runs = tiger_setup
    model = runs.module.eval()
    model.save_pretrained(tmp_path / "saved")
    again = GenerativeRecommender.from_pretrained(tmp_path / "saved", sid_table=table).eval()
    x = torch.tensor(np.stack([s[-10:] for s in split.test.histories[:5]]))
    assert torch.equal(model.beam_search(x, None, 5)[0], again.beam_search(x, None, 5)[0])


def test_loading_with_another_sid_table_is_refused(tiger_setup, tmp_path):
    _, table, *_, runs = tiger_setup
    runs.module.save_pretrained(tmp_path / "saved")
    other = SIDTable(np.roll(table.codes, 1, axis=0), table.codebook_size, table.settings)
    with pytest.raises(SIDVocabularyError, match="another SID table"):
        GenerativeRecommender.from_pretrained(tmp_path / "saved", sid_table=other)


def test_item_id_tokens_are_one_token_per_item(synthetic):
    table = item_id_table(synthetic)
    assert table.levels == 1 and table.codebook_size == synthetic.n_items and table.dedup_size == 1
    torch.manual_seed(0)
    model = GenerativeRecommender(GenRecConfig(max_items=6, text_vocab_size=50, backbone_overrides=TINY),
                                  table, synthetic.items["text"].tolist()).eval()
    split = leave_one_out(synthetic)
    history = torch.as_tensor(split.test.histories[0][-6:])
    items, _ = model.beam_search(history[None], history[None], 5, beam_width=synthetic.n_items)
    prompt, mask, _ = model.encode_histories(history[None])
    brute = brute_force_scores(model.model, model.vocab, table.codes, prompt[0][mask[0] > 0])
    brute[history] = -torch.inf                                           # the history is excluded
    assert torch.equal(items[0], brute.topk(5).indices)
