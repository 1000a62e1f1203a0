"""ShopX-mini's model: protocol tokens, the training data it reads, its retrieval, and the agent it plays."""
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from minirec.agent import Constraints, Harness, parse_action
from minirec.agent.episodes import run_episode
from minirec.agent.intents import KINDS, make_tasks, user_split
from minirec.agent.model import ModelBackend, ShopXAgent, ShopXConfig, ShopXMini, intended_action
from minirec.data.dataset import leave_one_out
from minirec.reasoning import itemic
from minirec.reasoning.onerec import OneRecConfig, OneRecThink

from conftest import ONEREC_SMALL

SMALL = dict(max_items=10, beam_width=20, text_vocab_size=300, backbone_overrides=ONEREC_SMALL)


@pytest.fixture(scope="module")
def small(ml100k, shop_sids):
    """The first 150 MovieLens users, and an untrained ShopX-mini over the real catalogue."""
    torch.manual_seed(0)
    ds = ml100k.subset_users(150)
    split = leave_one_out(ds)
    config = ShopXConfig(train_per_kind=40, examples_per_epoch=1200, val_per_kind=10, **SMALL)
    model = ShopXMini(config, shop_sids, itemic.tokenizer_corpus(ds))
    return split, model


def test_protocol_tokens_write_every_intended_action_compactly_and_exactly(shop, small):
    catalogue, split = shop
    _, model = small
    tasks = make_tasks(catalogue, split, np.arange(200), per_kind=10, seed=0)
    for task in tasks:
        for turn in range(len(task.turns)):
            text = intended_action(task, turn, catalogue.sids)
            ids = model.tokenizer.encode(text, add_special_tokens=False)
            assert parse_action(model.tokenizer.decode(ids)) == parse_action(text)
            if task.kind == "compound":                  # three constraints and the utterance, in a few dozen tokens
                assert len(ids) < 45
            if task.kind == "choice":                    # four SIDs: their code tokens and the protocol's pieces
                assert len(ids) <= 4 * 3 + 6
    assert model.text_tokens[model.tokenizer.convert_tokens_to_ids('{"action":"retrieve"')]      # the model may write it


def test_the_intended_actions_are_valid_and_keep_the_target_reachable(shop):
    """What the model is trained to write, played through a harness, always leaves the target among the allowed items."""
    catalogue, split = shop
    tasks = make_tasks(catalogue, split, np.arange(300), per_kind=20, seed=3)

    class Oracle:
        def act(self, harness, utterance, last):
            if last is None:
                self.turn = getattr(self, "turn", -1) + 1
                return intended_action(self.task, min(self.turn, len(self.task.turns) - 1), harness.catalogue.sids)
            return '{"action":"answer","items":["%s"]}' % harness.catalogue.sids[self.task.target]

    for task in tasks:
        oracle = Oracle()
        oracle.task = task
        episode = run_episode(task, Harness(catalogue, ModelBackendStub(), split.test.histories[task.user]), oracle)
        assert episode.invalid == 0 and not episode.crashed and episode.hit, task


class ModelBackendStub:
    """Retrieval that returns the allowed items in index order (the oracle only needs the harness's checks)."""

    def retrieve(self, history, allowed, k, intent=""):
        return np.flatnonzero(allowed)[:k].tolist()

    def rank(self, history, candidates, intent=""):
        return list(candidates)


def test_starting_from_the_aligned_checkpoint_keeps_its_rows_and_refuses_another_size(small, shop_sids, ml100k):
    split, model = small
    texts = itemic.tokenizer_corpus(split.dataset)
    torch.manual_seed(1)
    aligned = OneRecThink(OneRecConfig(stage="align", **SMALL), shop_sids, texts)
    shopx = ShopXMini(ShopXConfig(**SMALL), shop_sids, texts)
    protocol_rows = shopx.model.get_input_embeddings().weight[aligned.model.get_input_embeddings().weight.shape[0]:].clone()
    shopx.load_state_dict(aligned.state_dict())
    old = aligned.model.get_input_embeddings().weight
    new = shopx.model.get_input_embeddings().weight
    assert new.shape[0] > old.shape[0]
    assert torch.equal(new[:old.shape[0]], old) and torch.equal(new[old.shape[0]:], protocol_rows)
    for name, p in aligned.model.named_parameters():
        if "embed" not in name and "lm_head" not in name:
            assert torch.equal(p, dict(shopx.model.named_parameters())[name])
    state = dict(aligned.state_dict())
    state["model.model.embed_tokens.weight"] = state["model.model.embed_tokens.weight"][:-3]
    with pytest.raises(ValueError, match="vocabulary has"):
        shopx.load_state_dict(state)


def test_training_data_comes_from_training_users_and_their_training_items_only(small):
    split, model = small
    tasks, stage = model.training_tasks(split)
    train_users, held = user_split(split.dataset.n_users, model.config.held_out, model.config.task_seed)
    assert {t.user for t in tasks} <= set(train_users.tolist()) and not {t.user for t in tasks} & set(held.tolist())
    assert all(t.target == split.train[t.user][-1] for t in tasks)
    assert [t.kind for t in tasks] == [k for k in KINDS for _ in range(model.config.train_per_kind)]
    data = model.training_examples(split).dataset
    lo, hi = data.ranges["action"]
    ids, labels, _ = data[lo]
    written = [t for t, y in zip(ids, labels) if y != -100][:-1]          # the action, then <eos>
    assert model.tokenizer.decode(written) == model.tokenizer.decode(
        model.tokenizer.encode(intended_action(tasks[0], 0), add_special_tokens=False))
    # a choice's prompt holds the named films' SIDs, and its action is the rank that names them
    c = next(j for j, t in enumerate(tasks) if t.kind == "choice")
    ids, labels, _ = data[lo + sum(len(t.turns) for t in tasks[:c])]
    prompt = [t for t, y in zip(ids, labels) if y == -100]
    named = [t for i in tasks[c].candidates for t in model.wrapped_tokens[i].tolist()]
    assert any(prompt[j:j + len(named)] == named for j in range(len(prompt)))
    assert parse_action(model.tokenizer.decode([t for t, y in zip(ids, labels) if y != -100][:-1])) == parse_action(
        intended_action(tasks[c], 0, model.item_sids))
    lo, hi = data.ranges["retrieve"]
    ids, labels, _ = data[lo]
    assert [y for y in labels if y != -100] == model.wrapped_tokens[tasks[0].target].tolist()[1:]


def test_retrieval_is_the_exact_top_k_of_the_allowed_items(small):
    """The beam search over a few allowed items equals scoring every allowed item's SID by the model directly."""
    split, model = small
    model.eval()
    history = split.test.histories[3]
    allowed = np.zeros(len(model.item_tokens), dtype=bool)
    allowed[np.random.default_rng(0).choice(len(allowed), 12, replace=False)] = True
    got = model.retrieve_items(history, allowed, 5, "a comedy from the 90s")
    prompt = model.intent_prompt(history, "a comedy from the 90s")
    scores = {}
    for item in np.flatnonzero(allowed):
        codes = model.item_tokens[item].tolist()
        ids = torch.tensor([prompt + codes])
        with torch.no_grad():
            logp = F.log_softmax(model.model(input_ids=ids).logits[0].float(), -1)
        scores[int(item)] = sum(float(logp[len(prompt) - 1 + d, c]) for d, c in enumerate(codes))
    brute = sorted(scores, key=lambda i: -scores[i])[:5]
    assert got == brute and all(allowed[i] for i in got)
    assert model.retrieve_items(history, np.zeros_like(allowed), 5) == []


def test_an_untrained_model_plays_every_task_kind_without_a_crash_and_its_errors_are_counted(shop, small):
    catalogue, split = shop
    _, model = small
    tasks = make_tasks(catalogue, split, np.arange(100), per_kind=2, seed=5)
    agent, backend = ShopXAgent(model), ModelBackend(model)
    for task in tasks:
        h = Harness(catalogue, backend, split.test.histories[task.user])
        episode = run_episode(task, h, agent)
        assert not episode.crashed
        assert episode.invalid == h.state.invalid and set(episode.answer) <= set(range(catalogue.n_items))


def test_a_short_fine_tune_learns_to_write_the_intended_actions(shop, small, tmp_path):
    """The learned tool-caller (ShopX-mini's action writing, its epochs chosen on the validation turns' exact actions),
    trained for a minute on training users: its first actions for held-out users mostly parse and name the intended
    action, and some match it exactly; before training none does. Its validation curve is the share it writes
    exactly."""
    from minirec.agent.model import ToolCaller
    from minirec.experiments.runner import RunSpec, run
    from minirec.profiles import get_profile, with_recipe
    catalogue, _ = shop
    split, untrained = small
    config = replace(untrained.config, shop_mix=(1.0, 0.0, 0.0))
    spec = RunSpec("tool-caller", ToolCaller, config, untrained.sid_table, itemic.tokenizer_corpus(split.dataset))
    profile = with_recipe(get_profile("smoke"), "agent", max_epochs=5, patience=5, batch_size=16, lr=3e-3,
                          warmup_steps=20)
    runs = run(spec, split, profile, runs_dir=tmp_path, verbose=False)
    trained = runs.module
    curve = [r["val_action_exact"] for r in runs.fits[0].curves]
    assert max(curve) > curve[0] and 0 <= min(curve) and max(curve) <= 1
    _, held = user_split(split.dataset.n_users, untrained.config.held_out, untrained.config.task_seed)
    tasks = make_tasks(catalogue, split, held, per_kind=6, seed=9)

    def written(model):
        out = []
        for task in tasks:
            text = model.write_action(split.test.histories[task.user], Constraints(), task.turns[0].text,
                                      named=task.turns[0].named)
            try:
                out.append((task, parse_action(text)))
            except ValueError:
                out.append((task, None))
        return out

    after, before = written(trained), written(untrained)
    parses = lambda rows: np.mean([a is not None for _, a in rows])
    same_name = lambda rows: np.mean([a is not None and a.name == parse_action(intended_action(t, 0, sids)).name
                                      for t, a in rows])
    exact = lambda rows: np.mean([a == parse_action(intended_action(t, 0, sids)) for t, a in rows])
    sids = catalogue.sids
    assert parses(after) >= 0.6 > parses(before)
    assert same_name(after) >= 0.6 > same_name(before)
    assert exact(after) > exact(before)


def test_action_agreement_scores_every_turn_against_the_intended_action(shop, small, monkeypatch):
    from minirec.agent.model import action_agreement
    catalogue, split = shop
    _, model = small
    tasks = make_tasks(catalogue, split, np.arange(100), per_kind=1, seed=6, stage=split.valid)
    turns = sum(len(t.turns) for t in tasks)
    rows = action_agreement([model], tasks, split.valid)
    assert len(rows) == turns and {r["kind"] for r in rows} == set(KINDS)
    # a model that writes exactly the intended action agrees everywhere; one that writes nonsense nowhere
    script = iter([intended_action(task, turn, model.item_sids) for task in tasks for turn in range(len(task.turns))])
    monkeypatch.setattr(model, "write_action", lambda *args, **kwargs: next(script))
    assert all(r["parses"] and r["exact"] and r["same action"] for r in action_agreement([model], tasks, split.valid))
    monkeypatch.setattr(model, "write_action", lambda *args, **kwargs: "not an action")
    assert not any(r["parses"] or r["same action"] for r in action_agreement([model], tasks, split.valid))
