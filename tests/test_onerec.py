"""OneRec-Think: item/word sequences, the task mix, token warm-up, rationales, text generation and decoding."""
import numpy as np
import pytest
import torch

from minirec.models.backbone import tiny_config
from minirec.models.beam_search import brute_force_scores
from minirec.reasoning import itemic
from minirec.data.dataset import DataFormatError, EmptyHistoryError, UnknownItemError, pad_left, training_windows
from minirec.experiments.runner import checkpoint_dir, fingerprint
from minirec.profiles import get_profile, with_recipe
from minirec.reasoning.onerec import merge_candidates
from minirec.reasoning.rationales import (genre_agreement, genres_in, rationale_genres, rationale_text, reasoning_positions,
                               similarity_matrix)
from minirec.models.sampling import generate_text

from conftest import ONEREC_SMALL as SMALL

@pytest.fixture(scope="module")
def setup(onerec_setup):
    return onerec_setup


@pytest.fixture(scope="module")
def trained(onerec_trained):
    return onerec_trained


# ----------------------------------------------------------------------------- examples
def test_task_examples_put_the_loss_where_the_method_says(setup):
    split, table, spec = setup
    model = spec.build()
    w = model.writer(split.dataset)
    v = model.vocab
    ids, labels = itemic.sequential_examples(w, training_windows(split.train, 10)[:1])[0]
    first = w.item(int(training_windows(split.train, 10)[0][0]))
    assert ids[1:1 + len(first)] == first and labels[:1 + len(first)] == [-100] * (1 + len(first))
    assert all(l == i for i, l in zip(ids[1 + len(first):], labels[1 + len(first):]))
    to_text, to_sid = itemic.caption_examples(w, [3])
    sid = w.item(3)
    assert to_text[0][1:1 + len(sid)] == sid and set(to_text[1][:1 + len(sid)]) == {-100}
    # the expected caption is spelled out from the item's own fields, not taken from the writer under test
    row = split.dataset.items.iloc[3]
    expected = f"{row['title']}" + (f" ({row['year']})" if row["year"] else "") + \
        (f". Genres: {', '.join(row['genres'])}." if len(row["genres"]) else ".")
    assert w.tokenizer.decode([t for t in to_text[1] if t >= 0 and t != v.eos_token]).strip() == expected
    assert [t for t in to_sid[1] if t >= 0] == sid + [v.eos_token]


def test_held_out_items_never_show_their_words_next_to_their_sid(setup):
    split, table, spec = setup
    model = spec.variant("a", stage="align").build()
    data = model.training_examples(split).dataset
    hidden = set(model.held_out_items(split.dataset.n_items).tolist())
    assert hidden
    w = model.writer(split.dataset)
    for ids, _ in data.examples:
        text = w.tokenizer.decode([t for t in ids if model.text_tokens[t]])
        for item in hidden:
            assert f" {w.title(item)};" not in text and w.caption(item) not in text


def test_a_stage_is_an_object_that_supplies_its_data_family_and_hooks(setup):
    """A stage is looked up by its config name once; the model never compares stage names. A subclass adds a stage
    by listing one more object, and the module trains on the data, under the family, that the object gives."""
    from dataclasses import replace as dc_replace
    from minirec.reasoning.onerec import STAGES, OneRecThink, SequentialPreference, StageData

    split, _, spec = setup
    # Base trains from scratch; the stages after it start from a checkpoint and fine-tune (the warm-up has its own
    # recipe), except alignment on a from-scratch backbone: the warm-up before it trained only the new token rows. On a
    # pretrained backbone Base and alignment fine-tune too
    assert {name: (s.recipe_family(spec.config), s.thinks, s.taught_words, s.start_thinks)
            for name, s in STAGES.items()} == {
        "base": ("onerec", False, False, False), "warmup": ("warmup", False, False, False),
        "align": ("onerec", False, True, False), "reason": ("finetune", True, True, False)}
    pretrained = dc_replace(spec.config, backbone="path/to/Qwen3-0.6B")
    assert [STAGES[name].recipe_family(pretrained) for name in ("base", "warmup", "align", "reason")] == [
        "finetune", "warmup", "finetune", "finetune"]
    calls = []

    class FirstHalf(SequentialPreference):             # next-item prediction on the first half of the users only
        name, family = "first-half", "generative"

        def examples(self, module, split, seed):
            full = super().examples(module, split, seed)
            calls.append(len(full.dataset))
            half = itemic.ExampleSet({"sequential": full.dataset.examples[:len(full.dataset) // 2]})
            return StageData(half, itemic.TaskMix(half, {"sequential": 1.0}, None, seed), ("sequential",))

        def on_train_start(self, module):
            calls.append("start")

    custom = type("Custom", (OneRecThink,), {"stages": {**STAGES, "first-half": FirstHalf()}})
    module = custom(dc_replace(spec.config, stage="first-half"), spec.sid_table, list(spec.texts))
    assert custom.recipe_family(module.config) == "generative" and OneRecThink.recipe_family(spec.config) == "onerec"
    data = module.training_examples(split)
    assert len(data.dataset) == calls[0] // 2 and module.stage_data is data and data.task_names == ("sequential",)
    module.on_train_start()
    assert calls[-1] == "start"
    with pytest.raises(ValueError, match="unknown stage 'first-half'"):
        OneRecThink(dc_replace(spec.config, stage="first-half"), spec.sid_table, list(spec.texts))


def test_task_mix_draws_the_shares_and_covers_the_lead_task_once(setup):
    split, _, spec = setup
    data, sampler, _ = spec.variant("a", stage="align", task_mix=(0.25, 0.5, 0.125, 0.125)).build().training_examples(split)
    picks = list(iter(sampler))
    lo, hi = data.ranges["sequential"]
    assert sorted(p for p in picks if lo <= p < hi) == list(range(lo, hi))        # every window once
    n = len(picks)
    for name, share in zip(itemic.TASKS, (0.25, 0.5, 0.125, 0.125)):
        lo, hi = data.ranges[name]
        assert abs(sum(lo <= p < hi for p in picks) / n - share) < 0.01
    with pytest.raises(ValueError, match="task_mix"):
        spec.variant("a", stage="align", task_mix=(1.0, 0.0)).build().training_examples(split)


def test_text_corpus_reads_lines_and_refuses_bad_files(tmp_path):
    good = tmp_path / "corpus.txt"
    good.write_text("first document\n\n second one \n", encoding="utf-8")
    assert itemic.text_corpus(good) == ["first document", "second one"]
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(DataFormatError, match="no text"):
        itemic.text_corpus(tmp_path / "empty.txt")
    (tmp_path / "latin.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(DataFormatError, match="not UTF-8"):
        itemic.text_corpus(tmp_path / "latin.txt")


def test_caption_parsing_and_scores(ml100k):
    cap = itemic.parse_caption("Toy Story (1995). Genres: Animation, Children's, Comedy.")
    assert (cap.title, cap.year, cap.genres) == ("Toy Story", "1995", ["Animation", "Children's", "Comedy"])
    assert itemic.parse_caption("garbage words").genres == []
    scores = itemic.caption_scores(["Toy Story (1995). Genres: Comedy, Drama.", "GoldenEye (1994). Genres: Drama."],
                                   ml100k, [0, 1])
    assert scores["title_exact"].tolist() == [1.0, 1.0] and scores["year_exact"].tolist() == [1.0, 0.0]
    assert scores["genre_accuracy"].tolist() == [1.0, 0.0]
    assert scores["genre_f1"][0] == pytest.approx(2 * 1 / (2 + 3)) and scores["genre_f1"][1] == 0.0
    assert itemic.token_f1("the big lebowski", "big lebowski") == pytest.approx(0.8)


# ----------------------------------------------------------------------------- token warm-up
def test_token_warmup_trains_only_the_new_rows_of_a_pretrained_checkpoint(setup, tmp_path):
    """A 'pretrained' Qwen3 with untied embeddings, saved by the test: only SID and boundary rows may move."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen3ForCausalLM
    split, table, spec = setup
    raw = Tokenizer(models.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel()
    raw.train_from_iterator(itemic.tokenizer_corpus(split.dataset), trainers.BpeTrainer(vocab_size=120,
                                                                                         special_tokens=["<unk>"]))
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>")
    torch.manual_seed(0)
    config = tiny_config("tiny", len(tok), **SMALL)
    config.tie_word_embeddings = False
    Qwen3ForCausalLM(config).save_pretrained(tmp_path / "ckpt")
    tok.save_pretrained(tmp_path / "ckpt")

    warm = spec.variant("warm-up", stage="warmup", backbone=str(tmp_path / "ckpt"), backbone_overrides={})
    module = warm.build().train()
    assert module.model.get_output_embeddings().weight is not module.model.get_input_embeddings().weight
    before = {k: v.detach().clone() for k, v in module.model.state_dict().items()}
    profile = with_recipe(get_profile("smoke"), "warmup", max_epochs=1, batch_size=32, weight_decay=0.1, lr=1e-2)
    from minirec.training import fit
    fit(module, module.make_datamodule(split), profile, tmp_path / "fit")
    new = torch.zeros(len(before["model.embed_tokens.weight"]), dtype=torch.bool)
    new[module.vocab.new_token_ids()] = True
    assert new.sum() == len(module.vocab.sid_ids) + 2
    for name, after in module.model.state_dict().items():
        if name in ("model.embed_tokens.weight", "lm_head.weight"):
            assert torch.equal(after[~new], before[name][~new]), name          # old rows: exactly as they were
            assert not torch.equal(after[new], before[name][new]), name        # new rows: trained
        else:
            assert torch.equal(after, before[name]), name


# ----------------------------------------------------------------------------- rationales
def test_rationale_names_the_genres_of_the_most_similar_history_items():
    genres = [["Comedy"], ["Drama", "Romance"], ["Drama"], ["Horror"], ["Drama", "Comedy"]]
    sim = np.eye(5)
    sim[4] = [0.1, 0.9, 0.8, 0.0, 1.0]                       # item 4 resembles items 1 and 2
    assert rationale_genres([0, 1, 2, 3], 4, genres, sim, k=2, n_genres=2) == ["Drama", "Romance"]
    assert rationale_genres([0, 1, 2, 3], 4, genres, sim, k=2, n_genres=1) == ["Drama"]
    assert rationale_genres([], 4, genres, sim) == []
    text = rationale_text(["Drama", "Romance"])
    assert text == " The user is likely to watch Drama and Romance movies"
    vocab = ["Comedy", "Drama", "Horror", "Romance"]
    assert genres_in(text, vocab) == ["Drama", "Romance"]
    agree = genre_agreement([text, rationale_text(["Horror"])], [1, 4], genres, vocab)
    assert agree["any"].tolist() == [1.0, 0.0] and agree["all"].tolist() == [1.0, 0.0]


def test_sid_similarity_counts_the_shared_prefix():
    codes = np.array([[0, 1, 0], [0, 1, 1], [0, 2, 0], [3, 1, 0]])     # last column: de-dup code
    sim = similarity_matrix("sid", codes=codes)
    assert sim[0].tolist() == [2, 2, 1, 0]
    with pytest.raises(ValueError, match="embeddings"):
        similarity_matrix("text")
    assert reasoning_positions([np.array([5, 6, 7]), np.array([1])]).tolist() == [[0, 1], [0, 2]]


# ----------------------------------------------------------------------------- writing and decoding
def test_generate_text_equals_step_by_step_greedy_and_keeps_to_the_allowed_tokens(setup):
    split, _, spec = setup
    model = spec.build().model.eval()
    torch.manual_seed(0)
    prompts = [[1, 40, 41, 42], [1, 50]]
    allowed = torch.zeros(model.config.vocab_size, dtype=torch.bool)
    allowed[100:140] = True
    ids, mask = itemic.left_pad(prompts, pad=0)
    written = generate_text(model, ids, mask, allowed, stop=2, max_new_tokens=6)
    for prompt, out in zip(prompts, written):
        seq, reference = list(prompt), []
        for _ in range(6):                                   # no cache, no padding: the plain definition
            logits = model(input_ids=torch.tensor([seq])).logits[0, -1]
            logits[~allowed & (torch.arange(len(logits)) != 2)] = -torch.inf
            token = int(logits.argmax())
            if token == 2:
                break
            reference.append(token)
            seq.append(token)
        assert out == reference
        assert all(allowed[t] for t in out)


def test_merge_candidates_keeps_each_items_best_score():
    items = torch.tensor([[3, 1, -1, 1, 2, 3]])
    scores = torch.tensor([[-1.0, -2.0, -torch.inf, -0.5, -3.0, -4.0]])
    top, best = merge_candidates(items, scores, n_items=5, k=4)
    assert top.tolist() == [[1, 3, 2, -1]]
    assert best[0, :3].tolist() == [-0.5, -1.0, -3.0]


def test_reasoning_beam_search_equals_brute_force_after_its_own_rationale(setup, trained):
    split, table, _ = setup
    module = trained["reason"].trained_module
    x = torch.as_tensor(split.test.inputs(10)[0])[None]
    items, scores = module.beam_search(x, None, k=5, beam_width=len(table.codes))
    v = module.vocab
    thought = module.write_rationales(module.prompts(x))[0]              # greedy: the one beam_search wrote
    prompt = module.prompts(x)[0] + [v.think_token] + thought + [v.think_end_token, v.item_token]
    bf = brute_force_scores(module.model, v, table.codes, torch.tensor(prompt))
    expected = torch.sort(bf, descending=True, stable=True)
    assert items[0].tolist() == expected.indices[:5].tolist()
    torch.testing.assert_close(scores[0], expected.values[:5], rtol=1e-4, atol=1e-4)


def test_several_sampled_rationales_give_catalogue_items_outside_the_history(setup, trained):
    split, table, _ = setup
    module = trained["reason"].trained_module
    module.config.n_rationales, module.config.rationale_temperature = 3, 1.0
    try:
        x = torch.as_tensor(pad_left(split.test.inputs(10)[:4]))
        exclude = torch.as_tensor(np.stack([np.pad(h, (40 - len(h), 0), constant_values=-1)
                                            for h in split.test.histories[:4]]))
        rationales = []
        items, _ = module.beam_search(x, exclude, k=10, rationales=rationales)
        assert len(rationales) == 12 and items.shape == (4, 10)
        for row, history in zip(items.tolist(), split.test.histories[:4]):
            assert len(set(row)) == 10 and all(0 <= i < len(table.codes) for i in row)
            assert not set(row) & set(history.tolist())
    finally:
        module.config.n_rationales, module.config.rationale_temperature = 1, 0.0
    with pytest.raises(EmptyHistoryError):
        module.beam_search(torch.full((1, 3), -1), None, k=5)


def test_alignment_teaches_captions_of_items_it_never_captioned(setup, trained):
    """Held-out items: the genre must come from what the codes mean, since no caption of them was trained."""
    split, table, _ = setup
    held = trained["align"].module.held_out_items(split.dataset.n_items).tolist()
    scores = {name: itemic.caption_scores(trained[name].module.caption(held), split.dataset, held)["genre_accuracy"]
              for name in ("base", "align")}
    assert scores["align"].mean() >= 0.5 > scores["base"].mean() + 0.25      # 4 top categories: chance is 0.25


def test_trained_stages_beat_popularity_and_reasoning_writes_genre_rationales(setup, trained):
    from minirec import metrics
    from minirec.models.baselines import Popularity
    split, *_ = setup
    pop = metrics.evaluate(Popularity(split), split.test)["ndcg@10"].mean()
    for name in ("base", "align", "reason"):
        assert trained[name].per_seed["ndcg@10"][0] > pop, name
    rationales = []
    trained["reason"].trained_module.beam_search(torch.as_tensor(pad_left(split.test.inputs(10)[:8])), None, k=5, rationales=rationales)
    vocab = split.dataset.genre_vocabulary
    assert sum(bool(genres_in(r, vocab)) for r in rationales) >= 6


def test_words_to_items_flag_unknown_text_and_unknown_sids_are_refused(setup, trained):
    split, table, _ = setup
    module = trained["align"].module
    matches = module.find_items([split.dataset.items["text"].iloc[5], "a film that does not exist"], split.dataset, k=3)
    assert matches[0].known and not matches[1].known
    assert all(0 <= i < len(table.codes) for m in matches for i in m.items)
    with pytest.raises(ValueError, match="empty"):
        module.find_items(["  "], split.dataset)
    with pytest.raises(UnknownItemError, match="codes"):
        module.caption_sid((0,))
    missing = next(s for s in np.ndindex(*table.level_sizes()) if not (table.codes == s).all(1).any())
    with pytest.raises(UnknownItemError, match="no catalogue item"):
        module.caption_sid(missing)
    with pytest.raises(UnknownItemError):
        module.caption([len(table.codes)])


def test_a_later_stage_is_fingerprinted_with_its_parent(setup):
    split, _, spec = setup
    profile = get_profile("smoke")
    align = spec.variant("w", stage="warmup").then("a", stage="align")
    other = align.variant("a", parent=spec.variant("w", stage="warmup", persona_items=3))
    fa, fo = fingerprint(align, split, profile), fingerprint(other, split, profile)
    assert fa["config"] == fo["config"] and fa["parent"] != fo["parent"]
    assert checkpoint_dir(align, fa, 0) != checkpoint_dir(other, fo, 0)
    # Base trains from scratch, the warm-up under its own recipe, alignment under the fine-tuning recipe from its
    # parent's checkpoint, which it validates as epoch 0
    from dataclasses import asdict
    reason = align.then("r", stage="reason")
    assert fingerprint(reason, split, profile)["recipe"] == asdict(profile.recipe("finetune")) != fa["recipe"]
    assert fa["recipe"] == fingerprint(spec, split, profile)["recipe"] != fa["parent"]["recipe"]
    assert fa["parent"]["recipe"] == asdict(profile.recipe("warmup")) and fa["start"] == "validated as epoch 0"
    assert "start" not in fingerprint(spec, split, profile)


def test_refinement_keeps_rationales_that_reach_the_target_and_drops_the_rest(setup, trained, monkeypatch):
    split, *_ = setup
    module = trained["reason"].trained_module
    data, sampler, _ = module.training_examples(split)
    writer = module.writer(split.dataset)
    chosen = list(range(0, data.n_reasoning, data.n_reasoning // 40))[:40]
    # what the tiny test model writes itself: an own rationale replaces a template only when it is finished and names
    # a genre; anything else leaves the template in place
    counts = module.refine_rationales(chosen + [data.n_reasoning])       # a sequential window: not a rationale's
    assert sum(counts.values()) == len(chosen)
    vocabulary = split.dataset.genre_vocabulary
    assert all(len(t) < module.config.rationale_tokens and genres_in(module.tokenizer.decode(t), vocabulary)
               for t in data.own.values())
    untouched = [i for i in chosen if i not in data.own and i not in data.dropped]
    assert len(untouched) == counts["template"]
    # well-formed rationales (each example's template words, as a model that learnt them writes them): each is kept
    # where the beams after it hold the target and dropped where they do not
    data.own.clear(), data.dropped.clear()
    written = iter([writer.text(data.rationale(i)) for i in chosen])
    monkeypatch.setattr(module, "write_rationales", lambda rows, *args, **kwargs: [next(written) for _ in rows])
    counts = module.refine_rationales(chosen)
    assert counts["template"] == 0 and counts["kept"] + counts["dropped"] == len(chosen) and counts["kept"] > 0
    assert set(data.own) | data.dropped == set(chosen) and not set(data.own) & data.dropped
    n_seq = sampler.counts["sequential"]
    assert n_seq == round(sampler.n * module.config.reason_sequential) > 0
    assert sampler.counts["reason"] == min(sampler.n - n_seq, data.n_reasoning - counts["dropped"])
    drawn = list(iter(sampler))
    assert not set(drawn) & data.dropped and set(sampler.last) == {i for i in drawn if i < data.n_reasoning}
    assert sum(i >= data.n_reasoning for i in drawn) == n_seq and len(drawn) == len(sampler)
    for i in list(data.own)[:3]:                         # the kept rationale is what the example now teaches
        ids, labels, _ = data[i]
        own = data.own[i]
        assert any(ids[j:j + len(own)] == own for j in range(len(ids)))


def test_refinement_loop_runs_inside_training(setup, trained, tmp_path, monkeypatch):
    from minirec.training import fit
    split, _, spec = setup
    module = spec.variant("r", stage="reason", refine_rationales=True, reason_examples=64).build()
    module.load_state_dict(trained["align"].module.state_dict())
    profile = with_recipe(get_profile("smoke"), "finetune", max_epochs=2, patience=2, batch_size=32)
    template = module.writer(split.dataset).text(rationale_text(["cat1", "cat2"]))     # a well-formed rationale
    monkeypatch.setattr(module, "write_rationales", lambda rows, *args, **kwargs: [template for _ in rows])
    result = fit(module, module.make_datamodule(split), profile, tmp_path / "fit")
    data = module.stage_data.dataset
    assert len(data.own) + len(data.dropped) > 0 and not set(data.own) & data.dropped    # the loop ran and decided
    logged = [r for r in result.curves if "refine_kept" in r]
    assert logged and all(0 <= r["refine_kept"] + r["refine_dropped"] <= 1 for r in logged)


def test_a_stage_study_piece_measures_its_captions_and_rationales(setup, trained):
    """What ``study.stage_diagnostics`` keeps in a piece: nothing for Base, captions after alignment, and rationales
    too after reasoning, each the same numbers the notebooks compute."""
    from minirec.experiments import study
    split, *_ = setup
    assert study.stage_diagnostics(trained["base"].module, split) == {}
    aligned = study.stage_diagnostics(trained["align"].module, split)
    held = trained["align"].module.held_out_items(split.dataset.n_items)
    expected = itemic.caption_scores(trained["align"].module.caption(held.tolist()), split.dataset, held)
    assert aligned["captions"]["held-out items"] == pytest.approx({k: v.mean() for k, v in expected.items()})
    assert set(aligned["captions"]) == {"held-out items", "captioned in training"} and "rationales" not in aligned
    reasoned = study.stage_diagnostics(trained["reason"].trained_module, split)["rationales"]
    assert reasoned["users"] == len(split.test) and 1 <= reasoned["distinct"] <= len(split.test)
    assert 0 <= reasoned["names every target genre"] <= reasoned["names a target genre"] <= 1


def test_sampled_evaluation_is_seeded_and_puts_the_greedy_decoding_back(setup, trained):
    from minirec.metrics import evaluate
    from minirec.reasoning.onerec import evaluate_sampled
    split, *_ = setup
    module = trained["reason"].trained_module
    first = evaluate_sampled({3: module}, split.test, n_rationales=2, temperature=1.0)
    again = evaluate_sampled({3: module}, split.test, n_rationales=2, temperature=1.0)
    assert list(first) == [3] and all((first[3][m] == again[3][m]).all() for m in first[3])      # seeded
    assert module.config.n_rationales == 1 and module.config.rationale_temperature == 0.0
    greedy = evaluate(module, split.test)
    assert set(first[3]) == set(greedy)
