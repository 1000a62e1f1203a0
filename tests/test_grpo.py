"""GRPO with a beam reward: rewards, advantages, the clipped objective and its KL on hand-made numbers; the module."""
import copy
import math

import numpy as np
import pytest
import torch

from minirec.data.dataset import pad_left
from minirec.experiments.runner import run
from minirec.reasoning.grpo import (GRPOConfig, ReasoningRL, beam_reward, completion_logprobs, grpo_loss, group_advantages,
                          partial_reward, rank_reward)
from minirec.profiles import get_profile, with_recipe  # ----------------------------------------------------------------------------- rewards
def test_rewards_on_hand_made_beams():
    beams = torch.tensor([[3, 5, -1], [1, 2, 4], [7, 6, 0]])
    targets = torch.tensor([5, 9, 7])
    assert beam_reward(beams, targets).tolist() == [1.0, 0.0, 1.0]
    torch.testing.assert_close(rank_reward(beams, targets), torch.tensor([(1 + 1 / math.log2(3)) / 2, 0.0, 1.0]))
    codes = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1], [2, 0], [2, 1], [3, 0], [3, 1], [0, 0], [2, 2]])
    # target 9 = (2, 2): item 4 = (2, 0) shares level 0 -> 1/2; target 5 is in the beams -> 1; a dead beam scores 0
    torch.testing.assert_close(partial_reward(beams, targets, codes), torch.tensor([1.0, 0.5, 1.0]))
    assert partial_reward(torch.tensor([[-1, -1]]), torch.tensor([0]), codes).item() == 0.0


def test_group_advantages_normalise_each_group_and_zero_the_flat_ones():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.5, 0.5, 0.5, 0.5], [0.0, 0.0, 0.0, 0.0], [3.0, 1.0, 2.0, 2.0]])
    adv, flat = group_advantages(rewards)
    assert flat.tolist() == [False, True, True, False]
    torch.testing.assert_close(adv[0], torch.tensor([1.0, -1.0, -1.0, 1.0]), atol=1e-5, rtol=0)
    assert adv[1].abs().sum() == 0 and adv[2].abs().sum() == 0
    std = math.sqrt(0.5)                                   # population std of (3, 1, 2, 2)
    torch.testing.assert_close(adv[3], torch.tensor([1 / std, -1 / std, 0.0, 0.0]), atol=1e-5, rtol=0)


def test_grpo_loss_clips_the_ratio_and_penalises_kl_on_hand_made_numbers():
    mask = torch.tensor([[1, 1], [1, 0]])
    zeros = torch.zeros(2, 2)
    # ratio 1 and ref = policy: loss = -mean advantage, no KL, nothing clipped
    out = grpo_loss(zeros, zeros, zeros, torch.tensor([1.0, -3.0]), mask)
    assert out["loss"].item() == pytest.approx(1.0) and out["kl"].item() == 0 and out["clipped"].item() == 0
    # ratio 1.5 on every token: A = +1 is capped at 1.2, A = -1 keeps the unclipped -1.5 (the pessimistic bound)
    logp = torch.full((2, 2), math.log(1.5), requires_grad=True)
    out = grpo_loss(logp, zeros, logp.detach(), torch.tensor([1.0, -1.0]), mask, clip=0.2, beta=0.0)
    assert out["loss"].item() == pytest.approx(-(1.2 - 1.5) / 2)
    assert out["clipped"].item() == 1.0
    out["loss"].backward()
    assert logp.grad[0].abs().sum() == 0                 # clipped: no gradient pushes it further
    assert logp.grad[1, 0] > 0 and logp.grad[1, 1] == 0  # A < 0: lower its probability; padding gets nothing
    # KL (k3): ref - logp = log 2 on every real token -> 2 - log 2 - 1 per token
    ref = torch.full((2, 2), math.log(2.0))
    out = grpo_loss(zeros, zeros, ref, torch.zeros(2), mask, beta=0.5)
    kl = 2 - math.log(2) - 1
    assert out["kl"].item() == pytest.approx(kl) and out["loss"].item() == pytest.approx(0.5 * kl)


# ----------------------------------------------------------------------------- the module
@pytest.fixture(scope="module")
def rl_spec(onerec_setup, onerec_trained):
    split, table, spec = onerec_setup
    reason = onerec_trained["reason"].spec
    return split, reason.then("GRPO", model=ReasoningRL, group_size=4, rl_beam=8, rl_prompts=24)


def test_rl_stage_carries_the_reasoning_config_and_refuses_bad_settings(rl_spec, onerec_setup):
    split, spec = rl_spec
    assert isinstance(spec.config, GRPOConfig) and spec.config.stage == "reason"
    assert spec.config.max_items == spec.parent.config.max_items and spec.parent.model.__name__ == "OneRecThink"
    _, table, _ = onerec_setup
    for bad, match in ((dict(reward="ndcg"), "unknown reward"), (dict(group_size=1), "at least 2"),
                       (dict(stage="align"), "stage")):
        with pytest.raises(ValueError, match=match):
            ReasoningRL(GRPOConfig(**{**spec.config.__dict__, **bad}), table, list(spec.texts))


@pytest.fixture
def sft_module(rl_spec, onerec_trained):
    """A fresh GRPO module holding the supervised reasoning weights (its reference is then the model itself)."""
    split, spec = rl_spec
    module = spec.build()
    module.load_state_dict(onerec_trained["reason"].trained_module.state_dict())
    return split, module.eval()


def test_completion_logprobs_equal_a_full_forward_over_the_allowed_tokens(sft_module):
    split, module = sft_module
    rollouts = module.rollout([split.train[0][:5], split.train[1][:3]], torch.tensor([int(split.train[0][5]),
                                                                                       int(split.train[1][3])]))
    n = rollouts.completion.shape[1]
    row = 1
    real = rollouts.mask[row].bool()
    ids = rollouts.ids[row][real][None]
    logits = module.model(input_ids=ids).logits[0, :-1].float().masked_fill(~module.rationale_vocab, -torch.inf)
    expected = torch.log_softmax(logits, -1).gather(1, ids[0, 1:, None]).squeeze(1)
    length = int(rollouts.completion[row].sum())
    got = completion_logprobs(module.model, rollouts.ids, rollouts.mask, n, module.rationale_vocab)[row, n - length:]
    torch.testing.assert_close(got, expected[-length:], rtol=1e-4, atol=1e-4)
    assert torch.isfinite(got).all() and rollouts.rewards.shape == (2, 4)


def test_an_update_raises_the_rationale_with_positive_advantage(sft_module):
    """The sign of the gradient: after a few steps, the rewarded rationale is likelier and the others less likely."""
    split, module = sft_module
    gen = torch.Generator().manual_seed(0)
    rollouts = module.rollout([split.train[2][:6]], torch.tensor([int(split.train[2][6])]), gen)
    rollouts.rewards = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    module.__dict__["_reference"] = copy.deepcopy(module.model)

    def seq_logp():
        lp = completion_logprobs(module.model, rollouts.ids, rollouts.mask, rollouts.completion.shape[1],
                                 module.rationale_vocab)
        return torch.where(rollouts.completion, lp, torch.zeros_like(lp)).sum(1)

    with torch.no_grad():
        before = seq_logp()
    opt = torch.optim.SGD(module.model.parameters(), lr=0.05)
    for _ in range(3):
        opt.zero_grad()
        module.rl_step(rollouts)["loss"].backward()
        opt.step()
    with torch.no_grad():
        after = seq_logp()
    distinct = [i for i in range(1, 4) if not torch.equal(rollouts.ids[i], rollouts.ids[0])]
    assert after[0] > before[0]
    assert all(after[i] < before[i] for i in distinct)


def test_grpo_fit_through_the_runner_logs_its_signals_and_recommends(rl_spec, onerec_trained, tmp_path):
    split, spec = rl_spec
    profile = with_recipe(get_profile("smoke"), "rl", max_epochs=2, patience=2, batch_size=6, lr=1e-3)
    runs = run(spec, split, profile, runs_dir=tmp_path, verbose=False)
    module = runs.module
    assert isinstance(module, ReasoningRL) and "_reference" not in str(list(module.state_dict()))
    start, *curves = runs.fits[0].curves              # epoch 0: the reasoning model it starts from, thinking
    assert len(curves) == 2 and start["epoch"] == -1 and "reward" not in start
    assert start["val_ndcg10"] == pytest.approx(runs.fits[0].start_val)
    assert module.thinks                               # kept start or not, GRPO's model thinks
    # it starts from its parent's best thinking epoch (the parent as trained in this runs folder, reused here; where
    # it kept its aligned start, those weights are its trained.ckpt): GRPO's epoch 0 is that epoch's validation score
    reason = run(spec.parent, split, profile, runs_dir=tmp_path, verbose=False).fits[0]
    best_thinking = max(r["val_ndcg10"] for r in reason.curves if r["epoch"] >= 0)
    assert runs.fits[0].start_val == pytest.approx(best_thinking, abs=1e-6)
    for row in curves:
        assert {"reward", "kl", "flat_groups", "clipped", "val_ndcg10"} <= set(row)
        assert 0 <= row["reward"] <= 1 and row["kl"] >= 0 and 0 <= row["flat_groups"] <= 1
    x = torch.as_tensor(pad_left(split.test.inputs(10)[:4]))
    items, _ = module.beam_search(x, None, k=5)
    assert ((items >= 0) & (items < split.dataset.n_items)).all()
    again = run(spec, split, profile, runs_dir=tmp_path, verbose=False)             # the checkpoint reloads
    np.testing.assert_allclose(again.per_seed["ndcg@10"], runs.per_seed["ndcg@10"])


def test_several_updates_per_batch_keep_the_sampling_policy_as_the_ratios_denominator(sft_module):
    """rl_updates > 1: the log-probabilities at sampling time are stored; at unchanged weights the loss is the same."""
    split, module = sft_module
    gen = torch.Generator().manual_seed(1)
    one = module.rollout([split.train[3][:6]], torch.tensor([int(split.train[3][6])]), gen)
    assert one.old_logp is None
    module.config.rl_updates = 2
    try:
        two = module.rollout([split.train[3][:6]], torch.tensor([int(split.train[3][6])]),
                             torch.Generator().manual_seed(1))
    finally:
        module.config.rl_updates = 1
    assert two.old_logp is not None and torch.isfinite(two.old_logp[two.completion]).all()
    assert [list(t) for t in two.thoughts] == [list(t) for t in one.thoughts]
    with torch.no_grad():
        a, b = module.rl_step(one), module.rl_step(two)
    torch.testing.assert_close(a["loss"], b["loss"], rtol=1e-5, atol=1e-6)
    assert b["clipped"].item() == 0.0
